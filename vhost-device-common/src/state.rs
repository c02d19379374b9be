// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device-state blob of live migration (`VHOST_USER_PROTOCOL_F_DEVICE_STATE`).
//!
//! A device describes its state as a serde type
//! ([`VirtioDevice::State`](crate::device::VirtioDevice::State)) with a version
//! number; the runtime adds the chains the device holds and wraps both in an
//! envelope that the destination checks before anything is applied:
//!
//! ```text
//! "VHDSTATE"  u16 format (1)  u16 device state version
//! u16 name length, device name (`vhost-device-rng`)
//! u32 body length, body: postcard (held heads per queue, device state)
//! u32 CRC-32 (IEEE) of everything before it
//! ```
//!
//! All integers little-endian. A blob from another device type, of an unknown
//! format or state version, truncated or with a bad checksum is refused with
//! an error that says which; the source keeps running (QEMU fails the
//! migration and restarts the source's rings).
//!
//! Ring positions are not in the blob: the front end migrates them itself
//! (`GET_VRING_BASE` on the source, `SET_VRING_BASE` on the destination).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"VHDSTATE";
const FORMAT: u16 = 1;
const FIXED: usize = 8 + 2 + 2 + 2;
/// The largest state blob a destination accepts.
pub const MAX_STATE: usize = 64 << 20;

/// Why a state blob was refused or could not be made.
#[derive(Debug, Error)]
pub enum StateError {
    /// Shorter than its header says.
    #[error("device state is truncated ({0} bytes)")]
    Truncated(usize),
    /// Not a vhost-device state at all.
    #[error("not a vhost-device device state (bad magic)")]
    BadMagic,
    /// Envelope format from a newer daemon.
    #[error("device state format {0} is not supported (this daemon reads format {FORMAT})")]
    Format(u16),
    /// Checksum mismatch.
    #[error("device state is corrupt (checksum {found:#010x}, expected {expected:#010x})")]
    Checksum {
        /// Stored checksum.
        found: u32,
        /// Computed checksum.
        expected: u32,
    },
    /// Larger than [`MAX_STATE`].
    #[error("device state of {0} bytes is larger than the {MAX_STATE}-byte limit")]
    TooLarge(usize),
    /// The device state version is not this daemon's.
    #[error("device state version {found} is not supported by this daemon (version {supported}); migrate between daemons of the same version")]
    Version {
        /// Version in the blob.
        found: u16,
        /// Version this daemon writes and reads.
        supported: u16,
    },
    /// Saved by another kind of device.
    #[error("device state was saved by {found}, not {expected}")]
    WrongDevice {
        /// Device that saved it.
        found: String,
        /// This device.
        expected: String,
    },
    /// The body does not decode.
    #[error("device state does not decode")]
    Decode(#[source] postcard::Error),
    /// The state could not be serialized.
    #[error("device state cannot be encoded")]
    Encode(#[source] postcard::Error),
}

#[derive(Serialize)]
struct BodyRef<'a, S> {
    held: &'a [Vec<u16>],
    state: &'a S,
}

#[derive(Deserialize)]
struct Body<S> {
    held: Vec<Vec<u16>>,
    state: S,
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Wrap a device's state and its held heads into a blob.
pub fn encode<S: Serialize>(
    device: &str,
    version: u16,
    held: &[Vec<u16>],
    state: &S,
) -> Result<Vec<u8>, StateError> {
    let body = postcard::to_stdvec(&BodyRef { held, state }).map_err(StateError::Encode)?;
    let len = u32::try_from(body.len()).map_err(|_| StateError::TooLarge(body.len()))?;
    let name = device.as_bytes();
    let name_len = u16::try_from(name.len()).map_err(|_| StateError::TooLarge(name.len()))?;
    let mut out = Vec::with_capacity(FIXED + name.len() + 4 + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Check and unwrap a blob made by [`encode`] for `device` at `version`.
pub fn decode<S: DeserializeOwned>(
    device: &str,
    version: u16,
    blob: &[u8],
) -> Result<(Vec<Vec<u16>>, S), StateError> {
    if blob.len() > MAX_STATE {
        return Err(StateError::TooLarge(blob.len()));
    }
    if blob.len() < MAGIC.len() || &blob[..MAGIC.len()] != MAGIC {
        return Err(if blob.len() < MAGIC.len() {
            StateError::Truncated(blob.len())
        } else {
            StateError::BadMagic
        });
    }
    if blob.len() < FIXED {
        return Err(StateError::Truncated(blob.len()));
    }
    let format = le16(blob, 8);
    if format != FORMAT {
        return Err(StateError::Format(format));
    }
    let found_version = le16(blob, 10);
    let name_end = FIXED + usize::from(le16(blob, 12));
    let body_at = name_end + 4;
    if blob.len() < body_at + 4 {
        return Err(StateError::Truncated(blob.len()));
    }
    let len = le32(blob, name_end) as usize;
    let end = body_at
        .checked_add(len)
        .filter(|&e| e + 4 == blob.len())
        .ok_or(StateError::Truncated(blob.len()))?;
    let expected = crc32(&blob[..end]);
    let found = le32(blob, end);
    if found != expected {
        return Err(StateError::Checksum { found, expected });
    }
    let name = String::from_utf8_lossy(&blob[FIXED..name_end]);
    if name != device {
        return Err(StateError::WrongDevice {
            found: name.into_owned(),
            expected: device.into(),
        });
    }
    if found_version != version {
        return Err(StateError::Version {
            found: found_version,
            supported: version,
        });
    }
    let (body, rest): (Body<S>, &[u8]) =
        postcard::take_from_bytes(&blob[body_at..end]).map_err(StateError::Decode)?;
    if !rest.is_empty() {
        return Err(StateError::Truncated(blob.len()));
    }
    Ok((body.held, body.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Quota {
        used: u64,
        window_ns: u64,
    }

    fn sample() -> Vec<u8> {
        let held = vec![vec![3, 7], vec![]];
        encode(
            "vhost-device-x",
            2,
            &held,
            &Quota {
                used: 42,
                window_ns: 9,
            },
        )
        .unwrap()
    }

    #[test]
    fn state_round_trips_with_held_heads() {
        let blob = sample();

        let (held, state): (_, Quota) = decode("vhost-device-x", 2, &blob).unwrap();

        assert_eq!(held, vec![vec![3, 7], vec![]]);
        assert_eq!(
            state,
            Quota {
                used: 42,
                window_ns: 9
            }
        );
    }

    #[test]
    fn flipped_byte_is_refused_as_corrupt() {
        let mut blob = sample();
        let mid = blob.len() / 2;
        blob[mid] ^= 0x40;

        let err = decode::<Quota>("vhost-device-x", 2, &blob).unwrap_err();

        assert!(matches!(err, StateError::Checksum { .. }), "{err}");
    }

    #[test]
    fn other_version_is_refused_naming_both() {
        let blob = sample();

        let err = decode::<Quota>("vhost-device-x", 3, &blob).unwrap_err();

        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(err.to_string().contains("version 3"), "{err}");
    }

    #[test]
    fn state_of_another_device_is_refused() {
        let blob = sample();

        let err = decode::<Quota>("vhost-device-y", 2, &blob).unwrap_err();

        assert!(matches!(err, StateError::WrongDevice { .. }), "{err}");
    }

    #[test]
    fn truncated_and_garbage_blobs_are_refused() {
        let blob = sample();

        assert!(decode::<Quota>("vhost-device-x", 2, &blob[..blob.len() - 1]).is_err());
        assert!(decode::<Quota>("vhost-device-x", 2, &[]).is_err());
        assert!(matches!(
            decode::<Quota>("vhost-device-x", 2, b"not a state at all"),
            Err(StateError::BadMagic)
        ));
    }

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
