//! Reading untrusted SAML XML (2.0 from IdPs, 1.1 from the Spine Security Broker) with roxmltree:
//! elements by namespace and local name, and the refusal of DTDs (entity expansion, XXE) before
//! any parser sees a document.

use roxmltree::Node;

pub const SAML2P: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const SAML2: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const SAML2_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Whether `node` is the element `{ns}name`.
pub fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// The first child element `{ns}name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| is(*n, ns, name))
}

/// Every child element `{ns}name`.
pub fn children<'a, 'i: 'a>(node: Node<'a, 'i>, ns: &'a str, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |n| is(*n, ns, name))
}

/// The trimmed text of the child element `{ns}name`.
pub fn child_text(node: Node<'_, '_>, ns: &str, name: &str) -> Option<String> {
    child(node, ns, name).and_then(|n| n.text()).map(|t| t.trim().to_owned())
}

/// A document type declaration: never accepted in anything carebroker reads.
pub fn has_dtd(xml: &str) -> bool {
    xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY")
}
