// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The one audited way to declare a wire struct `ByteValued`.
//!
//! Device crates declare their virtio wire structs in `virtio.rs` as `#[repr(C)]`
//! structs of `Le16`/`Le32`/`Le64`/`u8` fields, then write
//! `byte_valued!(MyStruct, 16);` with the sum of the field sizes. The macro
//! asserts at compile time that the struct has exactly that size, which proves
//! there is no padding; with only integer fields every bit pattern is valid.

/// Implement `vm_memory::ByteValued` for a `#[repr(C)]` struct of integer fields.
///
/// The second argument is the sum of the sizes of the fields; compilation fails
/// if the struct's size differs (that is, if it has padding).
#[macro_export]
macro_rules! byte_valued {
    ($t:ty, $size:expr) => {
        const _: () = assert!(::core::mem::size_of::<$t>() == $size);
        // SAFETY: the caller declares `$t` as `#[repr(C)]` with only integer (or
        // little-endian integer wrapper) fields; the assertion above proves the
        // struct is exactly as large as those fields, so it has no padding bytes,
        // and every bit pattern of integer fields is a valid value.
        unsafe impl $crate::vm_memory::ByteValued for $t {}
    };
}

#[cfg(test)]
mod tests {
    use vm_memory::{ByteValued, Le16, Le32};

    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(C)]
    struct Sample {
        a: Le32,
        b: Le16,
        c: Le16,
    }
    crate::byte_valued!(Sample, 8);

    #[test]
    fn wire_struct_round_trips_little_endian() {
        let s = Sample {
            a: 0x0102_0304.into(),
            b: 0x0506.into(),
            c: 0x0708.into(),
        };
        assert_eq!(s.as_slice(), &[4, 3, 2, 1, 6, 5, 8, 7]);
        assert_eq!(Sample::from_slice(s.as_slice()), Some(&s));
    }
}
