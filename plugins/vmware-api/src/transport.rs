//! The HTTP transport the caller supplies.

/// An HTTP answer as the transport received it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The HTTP status code (200, 500, ...).
    pub status: u16,
    /// The answer's headers, names as received (compared case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The answer's body, decoded as UTF-8.
    pub body: String,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends HTTP POST requests for the [`crate::Client`].
///
/// The crate does no I/O of its own: inside the WebAssembly plugin the host
/// does HTTP, in tests a small client over a TCP socket does. The transport
/// must not follow redirects or manage cookies: the client handles the
/// `vmware_soap_session` cookie itself.
pub trait Transport {
    /// POSTs `body` to `url` with these `headers` and returns the answer,
    /// whatever its status code (SOAP faults come with HTTP 500). An `Err`
    /// means no answer was received.
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String>;

    /// Called between two polls of a running vCenter task; `attempt` counts
    /// from 0. The default returns at once; a transport that can sleep
    /// should wait here (for example 200 ms, growing to a few seconds).
    fn pause(&mut self, attempt: u32) {
        let _ = attempt;
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String> {
        (**self).post(url, headers, body)
    }

    fn pause(&mut self, attempt: u32) {
        (**self).pause(attempt);
    }
}
