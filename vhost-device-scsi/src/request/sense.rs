// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! SCSI status and fixed-format sense data (SPC-4, 4.5.3).

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;

/// A sense key with its additional sense code and qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// The INFORMATION field (VALID bit set), e.g. the offset of a miscompare.
    pub information: Option<u32>,
}

impl Sense {
    const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            information: None,
        }
    }

    /// The same sense with the INFORMATION field set (SPC-4, 4.5.3).
    pub const fn with_information(self, information: u32) -> Self {
        Self {
            information: Some(information),
            ..self
        }
    }

    /// Fixed-format sense data (response code 0x70), 18 bytes.
    pub fn fixed(&self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        if let Some(info) = self.information {
            s[0] |= 0x80; // VALID
            s[3..7].copy_from_slice(&info.to_be_bytes());
        }
        s[2] = self.key;
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

/// NO SENSE.
pub const NO_SENSE: Sense = Sense::new(0x00, 0x00, 0x00);
/// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE.
pub const INVALID_OPCODE: Sense = Sense::new(0x05, 0x20, 0x00);
/// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE.
pub const LBA_OUT_OF_RANGE: Sense = Sense::new(0x05, 0x21, 0x00);
/// ILLEGAL REQUEST / INVALID FIELD IN CDB.
pub const INVALID_FIELD: Sense = Sense::new(0x05, 0x24, 0x00);
/// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED.
pub const LUN_NOT_SUPPORTED: Sense = Sense::new(0x05, 0x25, 0x00);
/// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR.
pub const PARAMETER_LIST_LENGTH: Sense = Sense::new(0x05, 0x1a, 0x00);
/// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST.
pub const INVALID_PARAMETER: Sense = Sense::new(0x05, 0x26, 0x00);
/// DATA PROTECT / WRITE PROTECTED.
pub const WRITE_PROTECTED: Sense = Sense::new(0x07, 0x27, 0x00);
/// MEDIUM ERROR / UNRECOVERED READ ERROR.
pub const READ_ERROR: Sense = Sense::new(0x03, 0x11, 0x00);
/// MEDIUM ERROR / WRITE ERROR.
pub const WRITE_ERROR: Sense = Sense::new(0x03, 0x0c, 0x00);
/// MEDIUM ERROR / MISCOMPARE DURING VERIFY.
pub const MISCOMPARE: Sense = Sense::new(0x0e, 0x1d, 0x00);
/// DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (the host file
/// system is full: ENOSPC).
pub const SPACE_ALLOCATION_FAILED: Sense = Sense::new(0x07, 0x27, 0x07);
/// NOT READY / LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE: the image is
/// locked by another process.
pub const NOT_READY: Sense = Sense::new(0x02, 0x04, 0x00);
/// UNIT ATTENTION / POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
pub const RESET_OCCURRED: Sense = Sense::new(0x06, 0x29, 0x00);
