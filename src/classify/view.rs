//! Zero-copy checked views over FrameSets and Frames (the first level of
//! parsing).
//!
//! A [`FrameSetView`] can only be made by [`FrameSetView::new_checked`], which
//! proves the header and length fit; after that no accessor can panic. A
//! [`FrameIter`] walks TLV frames and yields each one only after checking
//! that its header and value lie inside the bytes it walks.

use super::error::{Drop, Dropped};

/// Bytes of a FrameSet header: type u16, length u24, flags u16.
pub const FRAMESET_HEADER_LEN: usize = 7;
/// Bytes of a Frame header: type u16, length u24.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest UDP payload, and so the largest datagram we accept.
pub const MAX_DATAGRAM_LEN: usize = 65507;

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u24 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

/// A checked view of one FrameSet: header plus exactly `fslen` bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameSetView<'a> {
    bytes: &'a [u8],
}

impl<'a> FrameSetView<'a> {
    /// Checks that `buf` starts with a whole FrameSet and returns a view of it.
    /// The view's length (`wire_len`) tells where the next FrameSet starts.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Dropped> {
        if buf.len() < FRAMESET_HEADER_LEN {
            return Err(Dropped::at(Drop::TruncatedHeader, 0));
        }
        let fslen = be24(buf, 2) as usize;
        let total = FRAMESET_HEADER_LEN + fslen;
        if total > buf.len() {
            return Err(Dropped::at(Drop::FrameSetOverrun, 2));
        }
        Ok(FrameSetView {
            bytes: &buf[..total],
        })
    }

    /// FrameSet type number.
    pub fn fstype(&self) -> u16 {
        be16(self.bytes, 0)
    }

    /// Bytes of frames after the header.
    pub fn fslen(&self) -> usize {
        self.bytes.len() - FRAMESET_HEADER_LEN
    }

    /// The flags field (senders write 0; receivers ignore it).
    pub fn flags(&self) -> u16 {
        be16(self.bytes, 5)
    }

    /// The frames region (after the 7-byte header).
    pub fn frames(&self) -> &'a [u8] {
        &self.bytes[FRAMESET_HEADER_LEN..]
    }

    /// The whole FrameSet, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Header plus frames: where the next FrameSet of the datagram starts.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }
}

/// One frame as found on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView<'a> {
    /// Frame type number.
    pub ftype: u16,
    /// The value bytes (length = the frame's length field).
    pub value: &'a [u8],
    /// Offset of the frame header within the walked bytes.
    pub offset: usize,
}

impl FrameView<'_> {
    /// Header plus value.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER_LEN + self.value.len()
    }
}

/// Walks the TLV frames of a byte region. Yields `Err` once, at the first
/// frame that does not fit, and then stops.
#[derive(Clone, Debug)]
pub struct FrameIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Added to offsets in errors and views (the region's place in the datagram).
    base: usize,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    /// Walks `bytes`, reporting offsets relative to `base`.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        FrameIter {
            bytes,
            pos: 0,
            base,
            failed: false,
        }
    }

    /// Bytes not walked yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    /// Offset (with base) of the next frame.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<FrameView<'a>, Dropped>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        if rest.len() < FRAME_HEADER_LEN {
            self.failed = true;
            return Some(Err(Dropped::at(Drop::TruncatedFrame, self.offset())));
        }
        let ftype = be16(rest, 0);
        let len = be24(rest, 2) as usize;
        if len > rest.len() - FRAME_HEADER_LEN {
            self.failed = true;
            return Some(Err(Dropped::at(Drop::FrameOverrun, self.offset())));
        }
        let view = FrameView {
            ftype,
            value: &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len],
            offset: self.offset(),
        };
        self.pos += FRAME_HEADER_LEN + len;
        Some(Ok(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frameset_view_checks_bounds() {
        assert_eq!(
            FrameSetView::new_checked(&[0, 1, 0, 0]).unwrap_err().reason,
            Drop::TruncatedHeader
        );
        assert_eq!(
            FrameSetView::new_checked(&[0, 1, 0, 0, 9, 0, 0, 1])
                .unwrap_err()
                .reason,
            Drop::FrameSetOverrun
        );
        let v = FrameSetView::new_checked(&[0, 1, 0, 0, 1, 0, 3, 0xaa, 0xbb]).unwrap();
        assert_eq!(v.fstype(), 1);
        assert_eq!(v.fslen(), 1);
        assert_eq!(v.flags(), 3);
        assert_eq!(v.frames(), &[0xaa]);
        assert_eq!(v.wire_len(), 8);
    }

    #[test]
    fn frame_iter_stops_at_first_bad_frame() {
        let bytes = [0, 9, 0, 0, 1, 0x41, 0, 0, 0, 0, 7];
        let mut it = FrameIter::new(&bytes, 7);
        let f = it.next().unwrap().unwrap();
        assert_eq!((f.ftype, f.value, f.offset), (9, &[0x41][..], 7));
        let e = it.next().unwrap().unwrap_err();
        assert_eq!((e.reason, e.offset), (Drop::FrameOverrun, 13));
        assert!(it.next().is_none());
        let mut it = FrameIter::new(&[0, 0, 0], 0);
        assert_eq!(it.next().unwrap().unwrap_err().reason, Drop::TruncatedFrame);
    }
}
