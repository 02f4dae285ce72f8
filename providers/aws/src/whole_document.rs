//! Refuses a successful STS answer whose XML document is not whole. The SDK's XML reader takes
//! a document cut off mid-way (a connection closed early, a proxy that truncated it) and reads
//! what is there: a `SessionToken` cut short is handed over as if whole, and fields that never
//! arrived get defaults (an `Expiration` in 1970). A document is whole when it ends with the
//! end tag of the element it began with; anything else fails the call as an answer that is not
//! valid, which keyfed retries with backoff (issue 11).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The interceptor: checks every 2xx answer the SDK read as a success.
#[derive(Debug)]
pub(crate) struct WholeDocument;

/// Why an answer was refused; never quotes the answer, which may hold a secret key.
#[derive(Debug, thiserror::Error)]
#[error("the XML document of the answer ends before its root element does (cut off on the way?)")]
pub(crate) struct CutOff;

impl Intercept for WholeDocument {
    fn name(&self) -> &'static str {
        "keyfed::WholeDocument"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Only an answer the SDK took as a success: a failure (a body over the cap, one cut
        // off in transit) keeps its own error.
        let response = context.response();
        if !response.status().is_success() || context.output_or_error().is_err() {
            return Ok(());
        }
        match response.body().bytes() {
            Some(body) if is_whole(body) => Ok(()),
            _ => Err(CutOff.into()),
        }
    }
}

/// Whether `document` ends with the end tag of its root element (after an XML declaration,
/// comments and white space).
pub(crate) fn is_whole(document: &[u8]) -> bool {
    let text = String::from_utf8_lossy(document);
    let mut rest = text.trim();
    // The declaration, processing instructions and comments before the root element.
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            match after.split_once("?>") {
                Some((_, tail)) => rest = tail.trim_start(),
                None => return false,
            }
        } else if let Some(after) = rest.strip_prefix("<!--") {
            match after.split_once("-->") {
                Some((_, tail)) => rest = tail.trim_start(),
                None => return false,
            }
        } else {
            break;
        }
    }
    let Some(after) = rest.strip_prefix('<') else {
        return false;
    };
    let name: String = after
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    !name.is_empty() && rest.ends_with(&format!("</{name}>"))
}

#[cfg(test)]
mod tests {
    use super::is_whole;

    #[test]
    fn only_a_document_ending_with_its_root_element_is_whole() {
        let whole = "<?xml version=\"1.0\"?>\n<!-- a comment -->\n<Response xmlns=\"x\"><Result>\
                     <SessionToken>abc</SessionToken></Result></Response>\n";
        assert!(is_whole(whole.as_bytes()));
        // Cut anywhere, it is not.
        for cut in 1..whole.trim_end().len() {
            assert!(!is_whole(&whole.as_bytes()[..cut]), "cut at {cut}");
        }
        assert!(!is_whole(b""));
        assert!(!is_whole(b"not xml"));
        assert!(!is_whole("<Response><\u{0}".as_bytes()));
        assert!(!is_whole(b"<Response></Other>"));
    }
}
