//! STS's answers in the AWS Query protocol's XML: `<Action>Response` documents holding an
//! `<Action>Result` and `ResponseMetadata/RequestId`, and `ErrorResponse` documents, all in
//! the `https://sts.amazonaws.com/doc/2011-06-15/` namespace.

use quick_xml::Writer;
use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

pub(crate) const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// An element with text, or with child elements.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String, String),
    Parent(String, Vec<Node>),
}

pub(crate) fn text(name: &str, value: impl Into<String>) -> Node {
    Node::Text(name.to_owned(), value.into())
}

pub(crate) fn parent(name: &str, children: Vec<Node>) -> Node {
    Node::Parent(name.to_owned(), children)
}

/// A successful answer: `<{action}Response><{action}Result>…</…><ResponseMetadata>…`.
pub(crate) fn response(action: &str, result: Vec<Node>, request_id: &str) -> String {
    render(
        &format!("{action}Response"),
        &[
            parent(&format!("{action}Result"), result),
            parent("ResponseMetadata", vec![text("RequestId", request_id)]),
        ],
    )
}

/// An error answer; `Type` is `Sender` for the caller's faults and `Receiver` for STS's own.
pub(crate) fn error(status: u16, code: &str, message: &str, request_id: &str) -> String {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    render(
        "ErrorResponse",
        &[
            parent(
                "Error",
                vec![
                    text("Type", kind),
                    text("Code", code),
                    text("Message", message),
                ],
            ),
            text("RequestId", request_id),
        ],
    )
}

fn render(root: &str, children: &[Node]) -> String {
    let mut writer = Writer::new(Vec::new());
    let mut start = BytesStart::new(root);
    start.push_attribute(("xmlns", NAMESPACE));
    // Writing into a Vec cannot fail, so the io::Results below are always Ok.
    let _ = writer.write_event(Event::Start(start));
    for child in children {
        write_node(&mut writer, child);
    }
    let _ = writer.write_event(Event::End(BytesEnd::new(root)));
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

fn write_node(writer: &mut Writer<Vec<u8>>, node: &Node) {
    let (name, children, value) = match node {
        Node::Text(name, value) => (name, &[][..], Some(value)),
        Node::Parent(name, children) => (name, children.as_slice(), None),
    };
    let _ = writer.write_event(Event::Start(BytesStart::new(name.as_str())));
    if let Some(value) = value {
        // `<`, `>` and `&` only, as STS escapes; quotes stay as they are.
        let _ = writer.write_event(Event::Text(BytesText::from_escaped(partial_escape(value))));
    }
    for child in children {
        write_node(writer, child);
    }
    let _ = writer.write_event(Event::End(BytesEnd::new(name.as_str())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_has_sts_shape() {
        let doc = error(403, "AccessDenied", "Not <authorized> & 'no'", "r-1");
        assert_eq!(
            doc,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not &lt;authorized&gt; &amp; 'no'</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
        );
        assert!(error(500, "InternalFailure", "x", "r").contains("<Type>Receiver</Type>"));
    }

    #[test]
    fn response_wraps_result_and_metadata() {
        let doc = response(
            "GetCallerIdentity",
            vec![text("Arn", "a"), parent("Nested", vec![text("X", "1")])],
            "r-2",
        );
        assert_eq!(
            doc,
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>a</Arn><Nested><X>1</X></Nested></GetCallerIdentityResult><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
        );
    }
}
