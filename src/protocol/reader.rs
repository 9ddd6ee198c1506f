//! A tiny checked cursor over a byte slice: decoders index only through it, so no input can
//! make them panic.

/// A forward-only cursor over a byte slice; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next byte, or `None` at the end.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// The next two bytes as a big-endian `u16`.
    pub fn u16_be(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next four bytes as a big-endian `u32`.
    pub fn u32_be(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `n` bytes, or `None` (consuming nothing) if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    /// A `u16` length followed by that many bytes.
    pub fn len_prefixed(&mut self) -> Option<&'a [u8]> {
        let save = self.pos;
        let n = self.u16_be()?;
        match self.take(usize::from(n)) {
            Some(s) => Some(s),
            None => {
                self.pos = save;
                None
            }
        }
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_stops_at_the_end() {
        let mut r = Reader::new(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16_be(), Some(0x0203));
        assert_eq!(r.u32_be(), None);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.take(3), Some(&[4, 5, 6][..]));
        assert_eq!(r.u8(), None);
    }

    #[test]
    fn len_prefixed_consumes_nothing_when_short() {
        let mut r = Reader::new(&[0x00, 0x03, b'a', b'b']);
        assert_eq!(r.len_prefixed(), None);
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.rest(), &[0x00, 0x03, b'a', b'b']);
    }
}
