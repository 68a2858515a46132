//! A bounds-checked reader over a byte slice.

use crate::{DecodeError, PixelFormat};

pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.pos < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// RFB numbers are big endian ("Protocol Messages").
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn pixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        Ok(pf.read_pixel(self.take(pf.bytes_per_pixel())?))
    }
    pub(crate) fn cpixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        Ok(pf.read_cpixel(self.take(pf.cpixel_size())?))
    }
    /// A TPIXEL ("Tight Encoding"): red, green, blue bytes in that order
    /// when [`PixelFormat::tpixel_is_rgb`], else a PIXEL.
    pub(crate) fn tpixel(&mut self, pf: &PixelFormat) -> Result<u32, DecodeError> {
        if pf.tpixel_is_rgb() {
            let b = self.take(3)?;
            Ok(((b[0] as u32) << pf.red_shift)
                | ((b[1] as u32) << pf.green_shift)
                | ((b[2] as u32) << pf.blue_shift))
        } else {
            self.pixel(pf)
        }
    }
    /// Tight's compact length ("Tight Encoding", JpegCompression): 7 bits
    /// a byte while the top bit is set, the third byte whole; at most 22
    /// bits.
    pub(crate) fn compact_len(&mut self) -> Result<usize, DecodeError> {
        let b0 = self.u8()? as usize;
        let mut len = b0 & 0x7f;
        if b0 & 0x80 != 0 {
            let b1 = self.u8()? as usize;
            len |= (b1 & 0x7f) << 7;
            if b1 & 0x80 != 0 {
                len |= (self.u8()? as usize) << 14;
            }
        }
        Ok(len)
    }
}
