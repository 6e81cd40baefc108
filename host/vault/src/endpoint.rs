//! Encryption in transit for object-store vaults: an `s3://` or `azblob://`
//! vault's `endpoint=` must be `https://`. Plain `http://` is refused unless
//! the URL also says `insecure_http=true` *and* the endpoint is this machine
//! (an emulator such as moto or Azurite on 127.0.0.1). The chunks themselves
//! are always encrypted (AES-256-GCM) before they leave; TLS also protects the
//! signed requests, object names and sizes.

/// How a vault URL's data travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A local folder: no network.
    Local,
    /// Over TLS to this endpoint (`https://…`, or the service's default).
    Tls(String),
    /// Plain HTTP to this loopback endpoint, allowed by `insecure_http=true`.
    Plain(String),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Local => write!(f, "local folder"),
            Transport::Tls(e) => write!(f, "TLS to {e}"),
            Transport::Plain(e) => write!(
                f,
                "NOT ENCRYPTED in transit: plain http to {e}, allowed by insecure_http (the chunks are still encrypted)"
            ),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The transport of an object-store vault whose `endpoint=` is `endpoint`
/// (`None`: the service's default, always https) and whose `insecure_http=` is
/// `insecure`; `Err` says why it is refused and what to do.
pub(crate) fn check(endpoint: Option<&str>, insecure: bool) -> Result<Transport, String> {
    let Some(e) = endpoint else {
        if insecure {
            return Err(
                "insecure_http=true needs an endpoint= on this machine (an emulator on 127.0.0.1)"
                    .into(),
            );
        }
        return Ok(Transport::Tls("the service's default endpoint".into()));
    };
    let u = url::Url::parse(e).map_err(|err| format!("endpoint {e:?} is not a URL: {err}"))?;
    let host = u.host_str().unwrap_or("").to_string();
    match u.scheme() {
        "https" if insecure && !is_loopback(&host) => Err(format!(
            "insecure_http=true is only for an emulator on this machine, not {host}; drop it"
        )),
        "https" => Ok(Transport::Tls(e.to_string())),
        "http" if insecure && is_loopback(&host) => Ok(Transport::Plain(e.to_string())),
        "http" if is_loopback(&host) => Err(format!(
            "endpoint {e} is plain http: the vault's signed requests would travel unencrypted; use https://, or for an emulator on this machine add `&insecure_http=true`"
        )),
        "http" => Err(format!(
            "endpoint {e} is plain http: the vault's signed requests would travel unencrypted; use https:// (plain http is only allowed to an emulator on 127.0.0.1, with `&insecure_http=true`)"
        )),
        other => Err(format!(
            "endpoint {e}: scheme {other:?} is neither https nor http"
        )),
    }
}

/// How the data of the vault at `url` travels, for plans and `lifeboat vault`
/// output; `Err` with the reason when the URL would be refused.
pub fn transport(url: &str) -> Result<Transport, String> {
    if !(url.starts_with("s3://") || url.starts_with("azblob://")) {
        return Ok(Transport::Local);
    }
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mut endpoint = None;
    let mut insecure = false;
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "endpoint" => endpoint = Some(v.to_string()),
            "insecure_http" => insecure = v == "true",
            _ => {}
        }
    }
    check(endpoint.as_deref(), insecure)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(transport("./vault").unwrap(), Transport::Local);
        assert!(matches!(transport("s3://b/p").unwrap(), Transport::Tls(_)));
        assert!(matches!(
            transport("s3://b/p?endpoint=https://s3.example.com").unwrap(),
            Transport::Tls(_)
        ));
        assert!(matches!(
            transport("s3://b/p?endpoint=http://127.0.0.1:9000&insecure_http=true").unwrap(),
            Transport::Plain(_)
        ));
        let e = transport("s3://b/p?endpoint=http://127.0.0.1:9000").unwrap_err();
        assert!(e.contains("add `&insecure_http=true`"), "{e}");
        let e = transport("azblob://c/p?endpoint=http://blob.example.com&insecure_http=true")
            .unwrap_err();
        assert!(e.contains("use https://"), "{e}");
        let e =
            transport("s3://b/p?endpoint=https://s3.example.com&insecure_http=true").unwrap_err();
        assert!(e.contains("drop it"), "{e}");
        assert!(
            Transport::Plain("http://127.0.0.1:1".into())
                .to_string()
                .starts_with("NOT ENCRYPTED")
        );
    }
}
