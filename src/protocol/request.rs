//! Requests a client sends to epmd (spec §3), decoded from a frame payload and encoded back.

use super::error::RequestError;
use super::node::{NodeInfo, NodeName, NodeType};
use super::reader::Reader;
use super::tag::{
    ALIVE2_REQ, DUMP_REQ, KILL_REQ, MAX_NAME_CHARS, NAMES_REQ, PORT_PLEASE2_REQ, STOP_REQ,
};

/// An ALIVE2_REQ as framed on the wire, before the registration rules of spec §4.1 are
/// applied: its name and extra may still be refused with an error reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Alive2Request {
    /// The node's distribution port.
    pub port: u16,
    /// The node type byte.
    pub node_type: NodeType,
    /// The protocol byte.
    pub protocol: u8,
    /// HighestVersion: ≥ 6 selects ALIVE2_X_RESP.
    pub highest_version: u16,
    /// LowestVersion (stored, not validated).
    pub lowest_version: u16,
    /// The raw name bytes (no NUL; not yet checked for UTF-8 or length).
    pub name: Vec<u8>,
    /// The raw extra bytes (not yet checked for length).
    pub extra: Vec<u8>,
}

impl Alive2Request {
    /// Applies the registration rules of spec §4.1 (name, then extra length).
    pub fn to_node_info(&self) -> Result<NodeInfo, super::error::NameError> {
        let name = NodeName::new(&self.name)?;
        super::node::check_extra(&self.extra)?;
        Ok(NodeInfo {
            port: self.port,
            node_type: self.node_type,
            protocol: self.protocol,
            highest_version: self.highest_version,
            lowest_version: self.lowest_version,
            name,
            extra: self.extra.clone(),
        })
    }
}

/// A decoded request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Request {
    /// ALIVE2_REQ: register a node.
    Alive2(Alive2Request),
    /// PORT_PLEASE2_REQ: look a node up by name.
    PortPlease2(NodeName),
    /// NAMES_REQ.
    Names,
    /// DUMP_REQ.
    Dump,
    /// KILL_REQ.
    Kill,
    /// STOP_REQ with the name as a C string (no UTF-8 or length check, spec §3.6).
    Stop(Vec<u8>),
}

impl Request {
    /// Decodes a frame payload (the bytes after the 2-byte length).
    ///
    /// Bytes a request type does not need are ignored, as the C epmd ignores them
    /// (`00 02 6E 58` is a valid NAMES request).
    pub fn decode(payload: &[u8]) -> Result<Request, RequestError> {
        let mut r = Reader::new(payload);
        let tag = r.u8().ok_or(RequestError::UnknownTag(0))?;
        match tag {
            ALIVE2_REQ => decode_alive2(payload).map(Request::Alive2),
            PORT_PLEASE2_REQ => decode_port_please2(r.rest()).map(Request::PortPlease2),
            NAMES_REQ => Ok(Request::Names),
            DUMP_REQ => Ok(Request::Dump),
            KILL_REQ => Ok(Request::Kill),
            STOP_REQ => decode_stop(r.rest()).map(Request::Stop),
            other => Err(RequestError::UnknownTag(other)),
        }
    }

    /// Appends the request's payload (without the length prefix) to `out`.
    ///
    /// `decode(encode(r)) == r` for every request that `decode` can return.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Request::Alive2(a) => {
                let start = out.len();
                out.push(ALIVE2_REQ);
                out.extend_from_slice(&a.port.to_be_bytes());
                out.push(a.node_type.to_byte());
                out.push(a.protocol);
                out.extend_from_slice(&a.highest_version.to_be_bytes());
                out.extend_from_slice(&a.lowest_version.to_be_bytes());
                push_len_prefixed(out, &a.name);
                push_len_prefixed(out, &a.extra);
                if out.len() - start <= 13 {
                    // An empty name with no extra is 13 bytes, which epmd refuses as too
                    // short; one ignored trailing byte makes it decodable.
                    out.push(0);
                }
            }
            Request::PortPlease2(name) => {
                out.push(PORT_PLEASE2_REQ);
                out.extend_from_slice(name.as_bytes());
            }
            Request::Names => out.push(NAMES_REQ),
            Request::Dump => out.push(DUMP_REQ),
            Request::Kill => out.push(KILL_REQ),
            Request::Stop(name) => {
                out.push(STOP_REQ);
                out.extend_from_slice(name);
                if name.is_empty() {
                    // A bare tag means "no name"; `s\0` is the empty name.
                    out.push(0);
                }
            }
        }
    }

    /// The request with its 2-byte length prefix, ready to send.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        self.encode_payload(&mut payload);
        let mut out = Vec::with_capacity(payload.len() + 2);
        super::frame::encode_frame(&payload, &mut out);
        out
    }
}

fn push_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// ALIVE2_REQ checks 2–5 of spec §3.1, in order; each failure closes without a reply.
fn decode_alive2(payload: &[u8]) -> Result<Alive2Request, RequestError> {
    if payload.len() <= 13 {
        return Err(RequestError::Alive2TooShort);
    }
    let mut r = Reader::new(payload);
    let _tag = r.u8();
    let fixed = (|| Some((r.u16_be()?, r.u8()?, r.u8()?, r.u16_be()?, r.u16_be()?)))();
    let (port, node_type, protocol, highest_version, lowest_version) =
        fixed.ok_or(RequestError::Alive2TooShort)?;
    let name = r.len_prefixed().ok_or(RequestError::NameBeyondData)?;
    if r.remaining() < 2 {
        // Nlen + 13 > size: the Elen field itself is missing.
        return Err(RequestError::NameBeyondData);
    }
    let extra = r.len_prefixed().ok_or(RequestError::ExtraBeyondData)?;
    if name.contains(&0) {
        return Err(RequestError::NulInName);
    }
    Ok(Alive2Request {
        port,
        node_type: NodeType::from_byte(node_type),
        protocol,
        highest_version,
        lowest_version,
        name: name.to_vec(),
        extra: extra.to_vec(),
    })
}

/// PORT_PLEASE2_REQ name rules of spec §3.2, including the C epmd's off-by-one: names of
/// 255 code points cannot be looked up.
fn decode_port_please2(name: &[u8]) -> Result<NodeName, RequestError> {
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    if name.is_empty() {
        return Err(RequestError::MissingName);
    }
    if name.contains(&0) {
        return Err(RequestError::NulInName);
    }
    let text = std::str::from_utf8(name).map_err(|_| RequestError::NameNotUtf8)?;
    // epmd counts the NUL it appended, so the limit is one less than for registration.
    if text.chars().count() + 1 > MAX_NAME_CHARS {
        return Err(RequestError::NameTooLong);
    }
    NodeName::new(name).map_err(|_| RequestError::NameTooLong)
}

/// STOP_REQ: the name is a C string, cut at the first NUL; only an absent name is refused.
fn decode_stop(rest: &[u8]) -> Result<Vec<u8>, RequestError> {
    if rest.is_empty() {
        return Err(RequestError::MissingName);
    }
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(rest[..end].to_vec())
}
