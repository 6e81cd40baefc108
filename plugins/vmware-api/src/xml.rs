//! Building SOAP requests and reading SOAP answers.
//!
//! Answers are read by local element names, whatever namespace prefixes the
//! server chose; `xsi:type` is read by its namespace.

use roxmltree::{Document, Node};

use crate::error::VmwareError;
use crate::types::MoRef;

/// The XML Schema instance namespace, where `type` names a value's type.
pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Escapes text for use in XML element content or a quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// `<name>escaped value</name>`.
pub(crate) fn element(name: &str, value: &str) -> String {
    format!("<{name}>{}</{name}>", escape(value))
}

/// `<name type="Type">value</name>`: a managed object reference parameter.
pub(crate) fn moref_element(name: &str, moref: &MoRef) -> String {
    format!(
        "<{name} type=\"{}\">{}</{name}>",
        escape(&moref.kind),
        escape(&moref.value)
    )
}

/// The SOAP envelope of a vim25 method call on `this` with the (already
/// escaped) parameter elements `params`.
pub(crate) fn envelope(method: &str, this: &MoRef, params: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" ",
            "xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" ",
            "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">",
            "<soapenv:Body><{method} xmlns=\"urn:vim25\">{this}{params}</{method}>",
            "</soapenv:Body></soapenv:Envelope>"
        ),
        method = method,
        this = moref_element("_this", this),
        params = params
    )
}

/// The first child element with this local name.
pub(crate) fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// All child elements with this local name.
pub(crate) fn children<'a, 'i>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The text of an element (empty when it has none).
pub(crate) fn text<'a>(node: Node<'a, '_>) -> &'a str {
    node.text().unwrap_or("")
}

/// The text of the first child element with this local name.
pub(crate) fn child_text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).map(text)
}

/// The local part of an element's `xsi:type`, e.g. `VirtualDisk` for
/// `xsi:type="VirtualDisk"` and `string` for `xsi:type="xsd:string"`.
pub(crate) fn xsi_type<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.attribute((XSI, "type"))
        .map(|t| t.rsplit_once(':').map_or(t, |(_, local)| local))
}

/// A managed object reference: `<x type="Type">value</x>`.
pub(crate) fn moref(node: Node<'_, '_>) -> Option<MoRef> {
    // The plain `type` attribute, not `xsi:type` (which a task's `result`
    // also carries).
    let kind = node
        .attributes()
        .find(|a| a.name() == "type" && a.namespace().is_none())?
        .value();
    let value = text(node).trim();
    if value.is_empty() {
        return None;
    }
    Some(MoRef::new(kind, value))
}

/// Parses a required number.
pub(crate) fn number<N: std::str::FromStr>(
    method: &str,
    node: Node<'_, '_>,
    name: &str,
) -> Result<N, VmwareError> {
    let raw = child_text(node, name)
        .ok_or_else(|| VmwareError::parse(method, format!("<{name}> is missing")))?;
    raw.trim()
        .parse()
        .map_err(|_| VmwareError::parse(method, format!("<{name}> is not a number: {raw:?}")))
}

/// At most `max` characters of `text`, for error messages.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// Reads a SOAP answer: a fault becomes [`VmwareError::Fault`], an HTTP error
/// without an envelope becomes [`VmwareError::Http`]; otherwise `read` gets
/// the `<{method}Response>` element.
pub(crate) fn read_answer<R>(
    method: &str,
    status: u16,
    body: &str,
    read: impl FnOnce(Node<'_, '_>) -> Result<R, VmwareError>,
) -> Result<R, VmwareError> {
    let http_error = || VmwareError::Http {
        method: method.to_owned(),
        status,
        body: snippet(body, 300),
    };
    let ok_status = (200..300).contains(&status);
    let doc = match Document::parse(body) {
        Ok(doc) => doc,
        Err(e) if ok_status => {
            return Err(VmwareError::parse(method, format!("not XML: {e}")));
        }
        Err(_) => return Err(http_error()),
    };
    let envelope = doc.root_element();
    let Some(answer) = child(envelope, "Body").and_then(|b| b.children().find(|c| c.is_element()))
    else {
        if ok_status {
            return Err(VmwareError::parse(method, "no SOAP Body in the answer"));
        }
        return Err(http_error());
    };
    if answer.tag_name().name() == "Fault" {
        return Err(fault(answer));
    }
    if !ok_status {
        return Err(http_error());
    }
    let expected = format!("{method}Response");
    if answer.tag_name().name() != expected {
        return Err(VmwareError::parse(
            method,
            format!("expected <{expected}>, got <{}>", answer.tag_name().name()),
        ));
    }
    read(answer)
}

/// The type and message of a `<Fault>` element.
fn fault(node: Node<'_, '_>) -> VmwareError {
    let message = child_text(node, "faultstring")
        .unwrap_or("")
        .trim()
        .to_owned();
    let detail = child(node, "detail").and_then(|d| d.children().find(|c| c.is_element()));
    let fault_type = match detail {
        Some(d) => fault_type_of(d),
        None => child_text(node, "faultcode")
            .unwrap_or("unknown")
            .trim()
            .to_owned(),
    };
    VmwareError::Fault {
        fault_type,
        message,
    }
}

/// The type of a fault element: its `xsi:type`, else its element name
/// without the `Fault` suffix vSphere appends (`FileFaultFault` → `FileFault`).
pub(crate) fn fault_type_of(node: Node<'_, '_>) -> String {
    if let Some(t) = xsi_type(node) {
        return t.to_owned();
    }
    let name = node.tag_name().name();
    name.strip_suffix("Fault")
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"a&b<c>"d"'e'"#),
            "a&amp;b&lt;c&gt;&quot;d&quot;&apos;e&apos;"
        );
    }

    #[test]
    fn envelope_escapes_this() {
        let env = envelope("Foo", &MoRef::new("VirtualMachine", "vm-<1>"), "");
        assert!(env.contains(r#"<_this type="VirtualMachine">vm-&lt;1&gt;</_this>"#));
        assert!(Document::parse(&env).is_ok());
    }

    #[test]
    fn reads_fault_without_detail() {
        let body = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>ServerFaultCode</faultcode><faultstring>boom</faultstring></s:Fault></s:Body></s:Envelope>"#;
        let err = read_answer("X", 500, body, |_| Ok(())).unwrap_err();
        assert_eq!(
            err,
            VmwareError::Fault {
                fault_type: "ServerFaultCode".into(),
                message: "boom".into()
            }
        );
    }

    #[test]
    fn moref_ignores_xsi_type() {
        let doc = Document::parse(
            r#"<result xmlns:x="http://www.w3.org/2001/XMLSchema-instance" x:type="ManagedObjectReference" type="VirtualMachineSnapshot">snapshot-1</result>"#,
        )
        .unwrap();
        assert_eq!(
            moref(doc.root_element()),
            Some(MoRef::new("VirtualMachineSnapshot", "snapshot-1"))
        );
        assert_eq!(xsi_type(doc.root_element()), Some("ManagedObjectReference"));
    }

    #[test]
    fn http_error_without_envelope() {
        let err = read_answer("X", 503, "Service Unavailable", |_| Ok(())).unwrap_err();
        assert!(matches!(err, VmwareError::Http { status: 503, .. }));
    }

    #[test]
    fn wrong_answer_element() {
        let body = r#"<Envelope><Body><BarResponse/></Body></Envelope>"#;
        let err = read_answer("Foo", 200, body, |_| Ok(())).unwrap_err();
        assert!(matches!(err, VmwareError::Parse { .. }));
    }
}
