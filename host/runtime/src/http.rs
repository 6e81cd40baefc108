//! `wasi:http` requests checked against a plugin's grants.

use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::sandbox::Phase;

/// One allowed destination: `host`, `host:port`, `*.domain` or `*.domain:port`.
/// Without a port any port is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parse a grant; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty host".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}` is a URL; grant a host or host:port, e.g. `api.example.com:443`"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{s}`: unexpected `{after}` after the address")),
            };
            (h.to_string(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: `{p}` is not a port number"))?,
            ),
            None => None,
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err(format!("`{s}`: only a leading `*.` wildcard is allowed"));
        }
        Ok(HostPattern {
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether a request to `host:port` is allowed by this grant.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host) && {
                let cut = host.len() - self.host.len();
                host.as_bytes()[cut - 1] == b'.'
            }
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Whether `host` (as a URI gives it) is this machine.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The hooks handed to `wasi:http`: every request passes through here.
/// A canned HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Answers a plugin's granted HTTP requests without the network: the plugin
/// harness (`lifeboat plugin test`) records each request and answers it from
/// fixture files. Grant and phase checks still apply first.
pub trait HttpStub: Send + Sync {
    fn answer(
        &self,
        method: &str,
        uri: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> HttpAnswer;
}

pub(crate) struct GrantHooks {
    pub(crate) allow: Arc<[HostPattern]>,
    /// Plain `http://` allowed to loopback hosts.
    pub(crate) insecure_http: bool,
    /// Answers requests instead of the network (the plugin harness).
    pub(crate) stub: Option<Arc<dyn HttpStub>>,
    pub(crate) phase: Phase,
    /// Denied requests, for the step's error message.
    pub(crate) denied: Arc<Mutex<Vec<String>>>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for GrantHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let _ = fut;
        let uri = request.uri();
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or("").to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let method = request.method().clone();
        let why = if !self.allow.iter().any(|p| p.matches(&host, port)) {
            Some(format!(
                "{method} {uri}: host `{host}:{port}` is not granted to this plugin"
            ))
        } else if !https && self.stub.is_none() && !(self.insecure_http && is_loopback(&host)) {
            Some(if is_loopback(&host) {
                format!(
                    "{method} {uri}: plain http:// is not encrypted and is refused; use https://, or for an emulator on this machine add `insecure_http: true` to the plugin's grants"
                )
            } else {
                format!(
                    "{method} {uri}: plain http:// is not encrypted and is refused; use https:// (plain HTTP is only allowed to an emulator on 127.0.0.1)"
                )
            })
        } else if self.phase == Phase::Plan
            && method != http::Method::GET
            && method != http::Method::HEAD
        {
            Some(format!(
                "{method} {uri}: only GET and HEAD are allowed while planning"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(reason = %why, "HTTP request denied");
            if let Ok(mut d) = self.denied.lock() {
                d.push(why);
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(%method, %uri, "HTTP request granted");
        if let Some(stub) = self.stub.clone() {
            return Box::new(async move {
                use http_body_util::BodyExt;
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes().to_vec();
                let headers: Vec<(String, String)> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect();
                let a = stub.answer(
                    parts.method.as_str(),
                    &parts.uri.to_string(),
                    &headers,
                    &body,
                );
                let mut res = http::Response::builder().status(a.status);
                for (k, v) in &a.headers {
                    res = res.header(k, v);
                }
                let body = http_body_util::Full::new(bytes::Bytes::from(a.body))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let res = res
                    .body(body)
                    .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
                Ok((
                    res,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                ))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern;

    #[test]
    fn patterns() {
        let p = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(p.matches("127.0.0.1", 8080));
        assert!(!p.matches("127.0.0.1", 8081));
        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches("api.example.com", 443));
        assert!(!w.matches("example.com", 443));
        assert!(!w.matches("evilexample.com", 443));
        let v6 = HostPattern::parse("[::1]:9000").unwrap();
        assert!(v6.matches("[::1]", 9000));
        assert_eq!(v6.to_string(), "[::1]:9000");
        assert!(HostPattern::parse("http://x").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("host:99999").is_err());
    }
}
