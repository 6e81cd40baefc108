//! Outgoing HTTP through `wasi:http`. The host only lets requests through to
//! hosts the workflow granted this plugin, and only GET/HEAD while planning.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::StepError;

/// A response: status and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Response headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, StepError> {
    request("GET", url, &[])
}

/// `POST url` with a body.
pub fn post(url: &str, body: &[u8]) -> Result<Response, StepError> {
    request("POST", url, body)
}

/// Any method. Errors are `unavailable` (retryable) when the network failed
/// and `denied` when the sandbox refused the destination.
pub fn request(method: &str, url: &str, body: &[u8]) -> Result<Response, StepError> {
    send(method, url, &[], body)
}

/// Any method, with request headers (e.g. `content-type`, `authorization`).
/// Header values are never logged by the host.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, StepError> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(StepError::invalid_input(format!(
            "`{url}` is not an http(s) URL"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let fields = Fields::new();
    for (k, v) in headers {
        fields
            .append(&k.to_ascii_lowercase(), v.as_bytes())
            .map_err(|e| StepError::invalid_input(format!("header `{k}` rejected: {e:?}")))?;
    }
    let req = OutgoingRequest::new(fields);
    let bad = |what: &str| StepError::invalid_input(format!("{what} of `{url}` rejected"));
    req.set_method(&method).map_err(|_| bad("method"))?;
    req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| bad("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| bad("path"))?;
    let out_body = req
        .body()
        .map_err(|_| StepError::new("internal", "request body taken twice"))?;
    let pending =
        outgoing_handler::handle(req, None).map_err(|e| net_error(url, &format!("{e:?}")))?;
    {
        let stream = out_body
            .write()
            .map_err(|_| StepError::new("internal", "body stream"))?;
        for chunk in body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                drop(stream);
                // the real reason (e.g. denied) is on the response future
                return Err(response_error(url, pending, &format!("{e:?}")));
            }
        }
    }
    OutgoingBody::finish(out_body, None).map_err(|e| net_error(url, &format!("{e:?}")))?;
    pending.subscribe().block();
    let resp = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(net_error(url, &format!("{e:?}"))),
        _ => {
            return Err(StepError::retryable(
                "unavailable",
                format!("{url}: no response"),
            ));
        }
    };
    let status = resp.status();
    let headers = resp
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let incoming = resp
        .consume()
        .map_err(|_| StepError::new("internal", "response body taken twice"))?;
    let stream = incoming
        .stream()
        .map_err(|_| StepError::new("internal", "response stream"))?;
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(StepError::retryable("unavailable", format!("{url}: {e:?}"))),
        }
    }
    Ok(Response {
        status,
        headers,
        body: data,
    })
}

fn response_error(
    url: &str,
    pending: wasip2::http::types::FutureIncomingResponse,
    fallback: &str,
) -> StepError {
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Err(e))) => net_error(url, &format!("{e:?}")),
        _ => net_error(url, fallback),
    }
}

fn net_error(url: &str, e: &str) -> StepError {
    if e.contains("HttpRequestDenied") {
        StepError::new(
            "denied",
            format!("{url}: the host denied this request (is it in the plugin's http grant?)"),
        )
    } else {
        StepError::retryable("unavailable", format!("{url}: {e}"))
    }
}
