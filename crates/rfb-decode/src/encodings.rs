//! Encoding numbers, from the tables of rfbproto.rst, "Encodings" (and,
//! where named, the registry list below them).

/// "Raw Encoding".
pub const RAW: i32 = 0;
/// "CopyRect Encoding".
pub const COPY_RECT: i32 = 1;
/// "RRE Encoding".
pub const RRE: i32 = 2;
/// "Hextile Encoding".
pub const HEXTILE: i32 = 5;
/// "zlib Encoding".
pub const ZLIB: i32 = 6;
/// "Tight Encoding".
pub const TIGHT: i32 = 7;
/// "ZRLE Encoding".
pub const ZRLE: i32 = 16;

/// "DesktopSize Pseudo-encoding".
pub const DESKTOP_SIZE: i32 = -223;
/// "LastRect Pseudo-encoding".
pub const LAST_RECT: i32 = -224;
/// "Cursor Pseudo-encoding".
pub const CURSOR: i32 = -239;
/// "X Cursor Pseudo-encoding".
pub const X_CURSOR: i32 = -240;
/// TightVNC's and libvncserver's PointerPos (`rfbEncodingPointerPos`,
/// 0xFFFFFF18), inside the registry's "Tight options" range -226..-238.
pub const POINTER_POS: i32 = -232;
/// "QEMU Extended Key Event Pseudo-encoding".
pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
/// "QEMU LED State Pseudo-encoding".
pub const LED_STATE: i32 = -261;
/// "DesktopName Pseudo-encoding".
pub const DESKTOP_NAME: i32 = -307;
/// "ExtendedDesktopSize Pseudo-encoding".
pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
/// "Cursor With Alpha Pseudo-encoding".
pub const CURSOR_WITH_ALPHA: i32 = -314;
/// "ExtendedMouseButtons Pseudo-encoding".
pub const EXTENDED_MOUSE_BUTTONS: i32 = -316;
/// "VMware Cursor Position Pseudo-encoding" (0x574d5666).
pub const VMWARE_CURSOR_POSITION: i32 = 0x574d_5666;
/// "VMware LED state Pseudo-encoding" (0x574d5668).
pub const VMWARE_LED_STATE: i32 = 0x574d_5668;
