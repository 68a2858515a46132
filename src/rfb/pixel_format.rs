//! RFB pixel formats: validation of what a client asks for, and translation
//! from the server's native frame format into the client's format.
//!
//! The native frame format is one `u32` per pixel holding `0x00RRGGBB`
//! (8 bits per channel). A client pixel *value* is the integer the client
//! format defines (`r << red_shift | g << green_shift | b << blue_shift`);
//! it is only turned into bytes (with the client's byte order and size)
//! when written to the wire.

use super::error::ProtocolError;

/// The 16-byte PIXEL_FORMAT structure of RFB 7.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// The server's own format: 32 bpp, depth 24, little endian, `0x00RRGGBB`.
    pub const NATIVE: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// RGB565, little endian (a common 16-bit client format).
    pub const RGB565: PixelFormat = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    };

    /// BGR233 (8 bits: 3 red bits low, 3 green, 2 blue high), TigerVNC's 256-colour level.
    pub const BGR233: PixelFormat = PixelFormat {
        bits_per_pixel: 8,
        depth: 8,
        big_endian: false,
        true_colour: true,
        red_max: 7,
        green_max: 7,
        blue_max: 3,
        red_shift: 0,
        green_shift: 3,
        blue_shift: 6,
    };

    /// The fixed colour map used for clients that ask for a colour-map (palette) format.
    /// Index layout is BGR233, so index = translate(BGR233).
    pub const COLOUR_MAP_LAYOUT: PixelFormat = PixelFormat::BGR233;

    /// Parse the 16 wire bytes. Does not validate; call [`PixelFormat::validate`].
    pub fn from_bytes(b: &[u8; 16]) -> PixelFormat {
        PixelFormat {
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
        }
    }

    /// The 16 wire bytes (padding zeroed).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = self.big_endian as u8;
        b[3] = self.true_colour as u8;
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Check a client-requested format. Accepted: 8, 16 or 32 bpp; depth 1..=bpp;
    /// for true colour, each maximum is 2^n-1 (1 <= n <= 16) and each channel's
    /// `shift + n` fits in bpp without overlapping another channel, and the
    /// channels use at most `depth` bits together. Colour-map
    /// formats are accepted only at 8 bpp (served with a fixed BGR233 palette).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: &'static str| Err(ProtocolError::BadPixelFormat(why));
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return bad("bits-per-pixel must be 8, 16 or 32");
        }
        if self.depth == 0 || self.depth > self.bits_per_pixel {
            return bad("depth must be between 1 and bits-per-pixel");
        }
        if !self.true_colour {
            if self.bits_per_pixel != 8 {
                return bad("colour-map formats are supported at 8 bits per pixel only");
            }
            return Ok(());
        }
        let mut used: u32 = 0;
        for (max, shift) in [
            (self.red_max, self.red_shift),
            (self.green_max, self.green_shift),
            (self.blue_max, self.blue_shift),
        ] {
            if max == 0 || (max as u32 + 1).count_ones() != 1 {
                return bad("colour maximum must be 2^n-1");
            }
            let bits = max.count_ones();
            if shift as u32 + bits > self.bits_per_pixel as u32 {
                return bad("colour shift plus bits exceeds bits-per-pixel");
            }
            let mask = (max as u32) << shift;
            if used & mask != 0 {
                return bad("colour channels overlap");
            }
            used |= mask;
        }
        if used.count_ones() > self.depth as u32 {
            return bad("colour bits exceed depth");
        }
        Ok(())
    }

    pub fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel as usize / 8
    }

    /// True when translation from the native frame is the identity on the value.
    pub fn is_native_value(&self) -> bool {
        self.true_colour
            && self.bits_per_pixel == 32
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
            && self.red_shift == 16
            && self.green_shift == 8
            && self.blue_shift == 0
    }

    /// Whether the colour channels fit in the low or high three bytes of a
    /// 32-bit pixel, allowing the 3-byte "compressed pixel" of ZRLE and Tight
    /// (CPIXEL/TPIXEL). Returns `Some(true)` when the value lives in the
    /// least significant three bytes, `Some(false)` for the most significant
    /// three, `None` when CPIXEL is a full 4-byte pixel.
    pub fn cpixel_low_bytes(&self) -> Option<bool> {
        if !self.true_colour || self.bits_per_pixel != 32 || self.depth > 24 {
            return None;
        }
        let mask = ((self.red_max as u32) << self.red_shift)
            | ((self.green_max as u32) << self.green_shift)
            | ((self.blue_max as u32) << self.blue_shift);
        let fits_low = mask & 0xff00_0000 == 0;
        let fits_high = mask & 0x0000_00ff == 0;
        match (fits_low, fits_high) {
            // Both fit (channels in the middle two bytes): like TigerVNC
            // and libvncserver, take the first three bytes on the wire.
            (true, true) => Some(!self.big_endian),
            (true, false) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        }
    }

    /// Number of bytes of a CPIXEL (ZRLE) / TPIXEL (Tight) in this format.
    pub fn cpixel_size(&self) -> usize {
        if self.cpixel_low_bytes().is_some() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Translate one native `0x00RRGGBB` pixel into this format's pixel value.
    #[inline]
    pub fn from_native(&self, p: u32) -> u32 {
        if !self.true_colour {
            return Self::COLOUR_MAP_LAYOUT.from_native(p);
        }
        let r = (p >> 16) & 0xff;
        let g = (p >> 8) & 0xff;
        let b = p & 0xff;
        (scale8(r, self.red_max) << self.red_shift)
            | (scale8(g, self.green_max) << self.green_shift)
            | (scale8(b, self.blue_max) << self.blue_shift)
    }

    /// Translate a pixel value of this format back to native `0x00RRGGBB`
    /// (each channel expanded to 8 bits by bit replication). Used by tests,
    /// decoders and the colour map.
    pub fn to_native(&self, v: u32) -> u32 {
        if !self.true_colour {
            return Self::COLOUR_MAP_LAYOUT.to_native(v & 0xff);
        }
        let r = expand8((v >> self.red_shift) & self.red_max as u32, self.red_max);
        let g = expand8(
            (v >> self.green_shift) & self.green_max as u32,
            self.green_max,
        );
        let b = expand8((v >> self.blue_shift) & self.blue_max as u32, self.blue_max);
        (r << 16) | (g << 8) | b
    }

    /// Translate a block of native pixels into pixel values, appending to `out`.
    pub fn translate_into(&self, native: &[u32], out: &mut Vec<u32>) {
        if self.is_native_value() {
            out.extend_from_slice(native);
        } else {
            out.extend(native.iter().map(|&p| self.from_native(p)));
        }
    }

    /// Append one pixel value as `bytes_per_pixel` bytes in the client's byte order.
    #[inline]
    pub fn write_pixel(&self, v: u32, out: &mut Vec<u8>) {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// Append one pixel value as a CPIXEL/TPIXEL (3 bytes when possible).
    #[inline]
    pub fn write_cpixel(&self, v: u32, out: &mut Vec<u8>) {
        match self.cpixel_low_bytes() {
            // The three bytes are written in the order they would appear in
            // the full pixel with the client's byte order, minus the unused byte.
            Some(true) if self.big_endian => out.extend_from_slice(&v.to_be_bytes()[1..]),
            Some(true) => out.extend_from_slice(&v.to_le_bytes()[..3]),
            Some(false) if self.big_endian => out.extend_from_slice(&v.to_be_bytes()[..3]),
            Some(false) => out.extend_from_slice(&v.to_le_bytes()[1..]),
            None => self.write_pixel(v, out),
        }
    }

    /// Read one pixel value of `bytes_per_pixel` bytes (used by decoders in tests/fuzzing).
    pub fn read_pixel(&self, b: &[u8]) -> u32 {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => b[0] as u32,
            (16, false) => u16::from_le_bytes([b[0], b[1]]) as u32,
            (16, true) => u16::from_be_bytes([b[0], b[1]]) as u32,
            (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (_, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Read one CPIXEL/TPIXEL (inverse of [`PixelFormat::write_cpixel`]).
    pub fn read_cpixel(&self, b: &[u8]) -> u32 {
        match self.cpixel_low_bytes() {
            Some(true) if self.big_endian => u32::from_be_bytes([0, b[0], b[1], b[2]]),
            Some(true) => u32::from_le_bytes([b[0], b[1], b[2], 0]),
            Some(false) if self.big_endian => u32::from_be_bytes([b[0], b[1], b[2], 0]),
            Some(false) => u32::from_le_bytes([0, b[0], b[1], b[2]]),
            None => self.read_pixel(b),
        }
    }

    /// The 256 colours of the fixed colour map, as native pixels (index = BGR233 value).
    pub fn fixed_colour_map() -> Vec<u32> {
        (0..256u32)
            .map(|i| Self::COLOUR_MAP_LAYOUT.to_native(i))
            .collect()
    }
}

/// Reduce an 8-bit channel to `max` (= 2^n-1): keep the top n bits, or
/// replicate bits upwards when n > 8.
#[inline]
fn scale8(c: u32, max: u16) -> u32 {
    let bits = max.count_ones();
    if bits <= 8 {
        c >> (8 - bits)
    } else {
        let v = c << (bits - 8);
        v | (c >> (16 - bits).min(8))
    }
}

/// Expand an n-bit channel value to 8 bits by bit replication.
fn expand8(v: u32, max: u16) -> u32 {
    let bits = max.count_ones();
    if bits >= 8 {
        return v >> (bits - 8);
    }
    let mut out = 0u32;
    let mut filled = 0;
    while filled < 8 {
        out = (out << bits) | v;
        filled += bits;
    }
    out >> (filled - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_round_trip_is_identity() {
        let pf = PixelFormat::NATIVE;
        pf.validate().unwrap();
        for p in [0u32, 0xffffff, 0x123456, 0xabcdef] {
            assert_eq!(pf.from_native(p), p);
            assert_eq!(pf.to_native(pf.from_native(p)), p);
        }
    }

    #[test]
    fn rgb565_keeps_top_bits() {
        let pf = PixelFormat::RGB565;
        pf.validate().unwrap();
        assert_eq!(pf.from_native(0xff0000), 0xf800);
        assert_eq!(pf.from_native(0x00ff00), 0x07e0);
        assert_eq!(pf.from_native(0x0000ff), 0x001f);
        assert_eq!(pf.to_native(0xf800), 0xff0000);
    }

    #[test]
    fn rejects_hostile_formats() {
        let mut pf = PixelFormat::NATIVE;
        for bpp in [0u8, 24, 33, 64] {
            pf.bits_per_pixel = bpp;
            assert!(pf.validate().is_err(), "bpp {bpp}");
        }
        pf = PixelFormat::RGB565;
        pf.depth = 24;
        assert!(pf.validate().is_err());
        pf = PixelFormat::RGB565;
        pf.red_max = 30;
        assert!(pf.validate().is_err());
        pf = PixelFormat::RGB565;
        pf.red_shift = 12;
        assert!(pf.validate().is_err());
        pf = PixelFormat::NATIVE;
        pf.red_max = 65535;
        assert!(pf.validate().is_err(), "32 colour bits at depth 24");
        pf = PixelFormat::NATIVE;
        pf.true_colour = false;
        assert!(pf.validate().is_err(), "32-bit colour map");
        pf = PixelFormat::BGR233;
        pf.true_colour = false;
        assert!(
            pf.validate().is_ok(),
            "8-bit colour map is served with a fixed palette"
        );
    }

    #[test]
    fn cpixel_round_trip() {
        for big in [false, true] {
            for (r, g, b) in [(16u8, 8u8, 0u8), (24, 16, 8), (0, 8, 16)] {
                let pf = PixelFormat {
                    big_endian: big,
                    red_shift: r,
                    green_shift: g,
                    blue_shift: b,
                    ..PixelFormat::NATIVE
                };
                pf.validate().unwrap();
                assert_eq!(pf.cpixel_size(), 3);
                let v = pf.from_native(0x123456);
                let mut out = Vec::new();
                pf.write_cpixel(v, &mut out);
                assert_eq!(out.len(), 3);
                assert_eq!(pf.read_cpixel(&out), v);
            }
        }
    }

    #[test]
    fn cpixel_takes_the_first_three_wire_bytes_when_both_ends_fit() {
        // Channels in bits 8..23 fit both the low and the high three bytes;
        // TigerVNC's ZRLE then sends the first three bytes on the wire.
        for big in [false, true] {
            let pf = PixelFormat {
                big_endian: big,
                red_max: 31,
                green_max: 63,
                blue_max: 31,
                red_shift: 19,
                green_shift: 13,
                blue_shift: 8,
                ..PixelFormat::NATIVE
            };
            pf.validate().unwrap();
            let v = pf.from_native(0xffffff);
            let mut full = Vec::new();
            pf.write_pixel(v, &mut full);
            let mut c = Vec::new();
            pf.write_cpixel(v, &mut c);
            assert_eq!(c, full[..3], "big endian: {big}");
            assert_eq!(pf.read_cpixel(&c), v);
        }
    }

    #[test]
    fn bgr233_expansion_is_stable() {
        let pf = PixelFormat::BGR233;
        for v in 0..256u32 {
            assert_eq!(pf.from_native(pf.to_native(v)), v);
        }
    }
}
