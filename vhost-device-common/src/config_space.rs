// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Bounds-checked access to a device's configuration space.
//!
//! `VHOST_USER_GET_CONFIG`/`SET_CONFIG` carry an offset and a size chosen by the
//! front end (and so, indirectly, by the guest). These helpers never index out of
//! range: an access that does not lie wholly inside the space is refused.

use thiserror::Error;

/// Why a config-space access was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The access does not lie wholly inside the config space.
    #[error("config access at offset {offset} size {size} is outside the {len}-byte config space")]
    OutOfRange {
        /// Requested offset.
        offset: u32,
        /// Requested size.
        size: usize,
        /// Size of the config space.
        len: usize,
    },
    /// The bytes touched include read-only fields.
    #[error("config bytes {offset}..{end} are read-only")]
    ReadOnly {
        /// Start of the refused write.
        offset: u32,
        /// End (exclusive) of the refused write.
        end: usize,
    },
}

fn range(len: usize, offset: u32, size: usize) -> Result<std::ops::Range<usize>, ConfigError> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    match start.checked_add(size) {
        Some(end) if end <= len => Ok(start..end),
        _ => Err(ConfigError::OutOfRange { offset, size, len }),
    }
}

/// Read `size` bytes at `offset` from `space`.
pub fn read(space: &[u8], offset: u32, size: u32) -> Result<Vec<u8>, ConfigError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let r = range(space.len(), offset, size)?;
    Ok(space[r].to_vec())
}

/// Write `data` at `offset` into `space`, allowing only bytes inside `writable`.
pub fn write(
    space: &mut [u8],
    writable: std::ops::Range<usize>,
    offset: u32,
    data: &[u8],
) -> Result<(), ConfigError> {
    let r = range(space.len(), offset, data.len())?;
    if r.start < writable.start || r.end > writable.end {
        return Err(ConfigError::ReadOnly { offset, end: r.end });
    }
    space[r].copy_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_inside_returns_bytes() {
        assert_eq!(read(&[1, 2, 3, 4], 1, 2), Ok(vec![2, 3]));
    }

    #[test]
    fn read_past_end_is_refused() {
        assert!(matches!(
            read(&[1, 2, 3, 4], 3, 2),
            Err(ConfigError::OutOfRange { .. })
        ));
    }

    #[test]
    fn read_with_overflowing_offset_is_refused() {
        assert!(read(&[0; 4], u32::MAX, u32::MAX).is_err());
    }

    #[test]
    fn read_of_empty_space_is_refused() {
        assert!(read(&[], 0, 1).is_err());
    }

    #[test]
    fn write_inside_writable_range_lands() {
        let mut space = [0u8; 8];
        write(&mut space, 4..8, 4, &[9, 9]).unwrap();
        assert_eq!(space, [0, 0, 0, 0, 9, 9, 0, 0]);
    }

    #[test]
    fn write_touching_read_only_bytes_is_refused() {
        let mut space = [0u8; 8];
        assert!(matches!(
            write(&mut space, 4..8, 3, &[9, 9]),
            Err(ConfigError::ReadOnly { .. })
        ));
        assert_eq!(space, [0; 8]);
    }
}
