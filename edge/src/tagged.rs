//! The one-number values the edge keeps in Spin's key-value store (the breakers' marks, the process's
//! origin budget): a 4-byte tag (what the value is, and its layout's version), then the number,
//! little-endian. A value with another tag, or of another length, is not one of them. No imports, so
//! every module that keeps such a value can use it.

/// `value` under `tag`.
pub fn tagged_i64(tag: &[u8; 4], value: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(tag);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// The number of a [`tagged_i64`] value with `tag`; `None` for anything else.
pub fn untag_i64(tag: &[u8; 4], bytes: &[u8]) -> Option<i64> {
    let rest = bytes.strip_prefix(tag)?;
    Some(i64::from_le_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_round_trips_under_its_tag_only() {
        let bytes = tagged_i64(b"asT1", -42);
        assert_eq!(bytes.len(), 12);
        assert_eq!(untag_i64(b"asT1", &bytes), Some(-42));
        assert_eq!(untag_i64(b"asT2", &bytes), None);
        assert_eq!(untag_i64(b"asT1", &bytes[..11]), None);
        assert_eq!(untag_i64(b"asT1", b"asT1"), None);
    }
}
