//! Pixel formats and pixel values as the RFB specification defines them
//! (rfbproto.rst, "ServerInit": PIXEL_FORMAT; "ZRLE Encoding": CPIXEL;
//! "Tight Encoding": TPIXEL). Nothing here comes from the server's code.

use crate::DecodeError;

/// A client pixel format: the 16 bytes of PIXEL_FORMAT (rfbproto.rst,
/// "ServerInit"), validated by [`PixelFormat::from_wire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// Parse and check the 16 bytes of PIXEL_FORMAT: bits-per-pixel, depth,
    /// big-endian-flag, true-colour-flag, red/green/blue-max (U16, big
    /// endian), red/green/blue-shift, 3 bytes of padding.
    ///
    /// Checked as the specification states it: bits-per-pixel "must be 8,
    /// 16 or 32" and at least *depth*; with true colour each max is 2^n - 1
    /// and its bits, shifted, lie inside the pixel.
    pub fn from_wire(b: &[u8; 16]) -> Result<PixelFormat, DecodeError> {
        let pf = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        if !matches!(pf.bits_per_pixel, 8 | 16 | 32) {
            return Err(DecodeError::Invalid("bits-per-pixel must be 8, 16 or 32"));
        }
        if pf.depth == 0 || pf.depth > pf.bits_per_pixel {
            return Err(DecodeError::Invalid("depth must be 1..=bits-per-pixel"));
        }
        if pf.true_colour {
            for (max, shift) in pf.channels() {
                // max = 2^n - 1 with n >= 1.
                if max == 0 || (max as u32 + 1).count_ones() != 1 {
                    return Err(DecodeError::Invalid("colour max is not 2^n - 1"));
                }
                if shift as u32 + max.count_ones() > pf.bits_per_pixel as u32 {
                    return Err(DecodeError::Invalid("colour channel outside the pixel"));
                }
            }
        }
        Ok(pf)
    }

    fn channels(&self) -> [(u16, u8); 3] {
        [
            (self.red_max, self.red_shift),
            (self.green_max, self.green_shift),
            (self.blue_max, self.blue_shift),
        ]
    }

    /// Bytes of one PIXEL on the wire.
    pub fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel as usize / 8
    }

    /// Read one PIXEL (`bytes_per_pixel` bytes) in the format's byte order.
    pub(crate) fn read_pixel(&self, b: &[u8]) -> u32 {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => b[0] as u32,
            (16, false) => u16::from_le_bytes([b[0], b[1]]) as u32,
            (16, true) => u16::from_be_bytes([b[0], b[1]]) as u32,
            (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (_, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// The bits a true-colour pixel value can have set.
    fn colour_mask(&self) -> u32 {
        self.channels()
            .iter()
            .fold(0, |m, &(max, shift)| m | ((max as u32) << shift))
    }

    /// Where a 3-byte CPIXEL sits in the 4-byte pixel ("ZRLE Encoding"):
    /// only with true colour, 32 bits per pixel and depth 24 or less, when
    /// the colour bits fit in the least or the most significant three
    /// bytes. `Some(n)`: the CPIXEL is the wire bytes `n..n + 3` of the
    /// pixel; `None`: a CPIXEL is a whole PIXEL.
    ///
    /// When both would fit (colour bits in the middle two bytes) the
    /// specification's note says the least significant three bytes are
    /// used; the viewers do otherwise and read the first three bytes on the
    /// wire (TigerVNC `ZRLEDecoder.cxx`: `isLowCPixel` is tested first and
    /// is true for a big-endian format whose colours fit the top three
    /// bytes; libvncclient `zrle.c` likewise). Those are the clients a
    /// server must satisfy, so this decoder follows them; for little-endian
    /// formats both readings agree.
    fn cpixel_offset(&self) -> Option<usize> {
        if !self.true_colour || self.bits_per_pixel != 32 || self.depth > 24 {
            return None;
        }
        let mask = self.colour_mask();
        let fits_ls = mask & 0xff00_0000 == 0;
        let fits_ms = mask & 0x0000_00ff == 0;
        // Wire offset of the least / most significant three bytes.
        let (ls, ms) = if self.big_endian { (1, 0) } else { (0, 1) };
        match (fits_ls, fits_ms) {
            (true, true) => Some(0),
            (true, false) => Some(ls),
            (false, true) => Some(ms),
            (false, false) => None,
        }
    }

    /// Bytes of one CPIXEL (ZRLE's *bytesPerCPixel*).
    pub fn cpixel_size(&self) -> usize {
        if self.cpixel_offset().is_some() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Read one CPIXEL: the three bytes are put back where they sit in the
    /// full pixel, the missing byte is zero.
    pub(crate) fn read_cpixel(&self, b: &[u8]) -> u32 {
        match self.cpixel_offset() {
            Some(off) => {
                let mut full = [0u8; 4];
                full[off..off + 3].copy_from_slice(&b[..3]);
                self.read_pixel(&full)
            }
            None => self.read_pixel(b),
        }
    }

    /// Whether a TPIXEL is 3 bytes of red, green, blue ("Tight Encoding"):
    /// true colour, 32 bits per pixel, depth 24 and each channel exactly 8
    /// bits wide.
    pub fn tpixel_is_rgb(&self) -> bool {
        self.true_colour
            && self.bits_per_pixel == 32
            && self.depth == 24
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
    }

    /// Bytes of one TPIXEL.
    pub fn tpixel_size(&self) -> usize {
        if self.tpixel_is_rgb() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// The pixel value of 8-bit red, green and blue intensities (for JPEG,
    /// whose data is RGB). The specification does not say how to scale;
    /// like TigerVNC's `PixelFormat::pixelFromRGB`, each channel keeps its
    /// top bits. Only meaningful for true-colour formats.
    pub fn from_rgb888(&self, r: u8, g: u8, b: u8) -> u32 {
        [
            (r, self.red_max, self.red_shift),
            (g, self.green_max, self.green_shift),
            (b, self.blue_max, self.blue_shift),
        ]
        .iter()
        .fold(0, |v, &(c, max, shift)| {
            let bits = max.count_ones();
            let c = if bits >= 8 {
                (c as u32) << (bits - 8)
            } else {
                c as u32 >> (8 - bits)
            };
            v | (c << shift)
        })
    }
}

impl TryFrom<[u8; 16]> for PixelFormat {
    type Error = DecodeError;
    fn try_from(b: [u8; 16]) -> Result<PixelFormat, DecodeError> {
        PixelFormat::from_wire(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(bpp: u8, depth: u8, be: bool, max: [u16; 3], shift: [u8; 3]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = bpp;
        b[1] = depth;
        b[2] = be as u8;
        b[3] = 1;
        b[4..6].copy_from_slice(&max[0].to_be_bytes());
        b[6..8].copy_from_slice(&max[1].to_be_bytes());
        b[8..10].copy_from_slice(&max[2].to_be_bytes());
        b[10..13].copy_from_slice(&shift);
        b
    }

    #[test]
    fn formats_the_spec_forbids_are_refused() {
        for b in [
            pf(24, 24, false, [255; 3], [16, 8, 0]),
            pf(0, 0, false, [255; 3], [16, 8, 0]),
            pf(16, 24, false, [31, 63, 31], [11, 5, 0]),
            pf(16, 16, false, [30, 63, 31], [11, 5, 0]),
            pf(16, 16, false, [31, 63, 31], [12, 5, 0]),
            pf(32, 24, false, [0, 255, 255], [16, 8, 0]),
        ] {
            assert!(PixelFormat::from_wire(&b).is_err(), "{b:?}");
        }
        let ok = PixelFormat::from_wire(&pf(16, 16, true, [31, 63, 31], [11, 5, 0])).unwrap();
        assert_eq!(ok.bytes_per_pixel(), 2);
        assert_eq!(ok.read_pixel(&[0xf8, 0x01]), 0xf801);
    }

    #[test]
    fn cpixel_and_tpixel_sizes_follow_the_spec() {
        // 32 bpp, depth 24, colours in the low three bytes: 3-byte CPIXEL
        // and, 8 bits a channel, 3-byte TPIXEL.
        let le = PixelFormat::from_wire(&pf(32, 24, false, [255; 3], [16, 8, 0])).unwrap();
        assert_eq!((le.cpixel_size(), le.tpixel_size()), (3, 3));
        assert_eq!(le.read_cpixel(&[0x56, 0x34, 0x12]), 0x123456);
        // Big endian, colours in the high three bytes: the wire bytes 0..3.
        let be = PixelFormat::from_wire(&pf(32, 24, true, [255; 3], [24, 16, 8])).unwrap();
        assert_eq!(be.read_cpixel(&[0x12, 0x34, 0x56]), 0x1234_5600);
        // Big endian, colours in the low three bytes: bytes 1..4 of the pixel.
        let be_low = PixelFormat::from_wire(&pf(32, 24, true, [255; 3], [16, 8, 0])).unwrap();
        assert_eq!(be_low.read_cpixel(&[0x12, 0x34, 0x56]), 0x0012_3456);
        // Depth 32: a CPIXEL is a whole PIXEL; 16 bpp too.
        let d32 = PixelFormat::from_wire(&pf(32, 32, false, [255; 3], [16, 8, 0])).unwrap();
        assert_eq!(d32.cpixel_size(), 4);
        let p565 = PixelFormat::from_wire(&pf(16, 16, false, [31, 63, 31], [11, 5, 0])).unwrap();
        assert_eq!((p565.cpixel_size(), p565.tpixel_size()), (2, 2));
        // 5-bit channels at 32 bpp: 3-byte CPIXEL but a full TPIXEL.
        let d15 = PixelFormat::from_wire(&pf(32, 15, false, [31; 3], [10, 5, 0])).unwrap();
        assert_eq!((d15.cpixel_size(), d15.tpixel_size()), (3, 4));
        assert_eq!(
            p565.from_rgb888(0xff, 0x80, 0x08),
            (31 << 11) | (32 << 5) | 1
        );
    }
}
