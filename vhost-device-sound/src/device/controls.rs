// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Audio controls (virtio 1.3, 5.14.6.9 "Control Elements"; offered with
//! `--controls`): for each stream a volume and a switch, named as ALSA names
//! them ("Playback Volume", "Playback Switch", "Capture Volume",
//! "Capture Switch"; `index` tells streams of one direction apart).
//!
//! The volume is an INTEGER from 0 to 100 with a dB-scale TLV of -50 dB to
//! 0 dB in 0.5 dB steps, 0 meaning mute; the switch a BOOLEAN. The daemon
//! applies them as software gain on the stream's samples (100 and on: the
//! samples pass untouched).

use std::sync::atomic::{AtomicU64, Ordering};

use vhost_device_common::vm_memory::ByteValued;

use crate::args::StreamSpec;
use crate::request::Error;
use crate::virtio::{ctl, CtlInfo, Direction, CTL_VALUE_SIZE};

/// Highest volume value (0 dB).
pub const VOLUME_MAX: i32 = 100;
/// dB of the lowest step, in 0.01 dB.
pub const VOLUME_MIN_CDB: i32 = -5000;
/// dB per step, in 0.01 dB.
pub const VOLUME_STEP_CDB: i32 = 50;

/// What a control is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Volume of a stream.
    Volume,
    /// On/off switch of a stream.
    Switch,
}

/// One control element.
#[derive(Debug)]
pub struct Control {
    /// Its stream.
    pub stream: u32,
    /// Volume or switch.
    pub kind: Kind,
    /// Direction of the stream.
    pub direction: Direction,
    /// Index among controls of the same name.
    pub index: u32,
}

/// The controls of a device and their values.
#[derive(Debug)]
pub struct Controls {
    /// The elements, by control id.
    pub list: Vec<Control>,
    values: Vec<std::sync::atomic::AtomicI32>,
    /// Per stream: the gain as f64 bits, read by the I/O workers.
    gains: Vec<AtomicU64>,
}

impl Controls {
    /// Two controls per stream: volume (id 2s) and switch (id 2s + 1).
    pub fn new(streams: &[StreamSpec]) -> Self {
        let mut list = Vec::new();
        let (mut outs, mut ins) = (0, 0);
        for (id, s) in (0u32..).zip(streams) {
            let index = match s.direction {
                Direction::Output => {
                    outs += 1;
                    outs - 1
                }
                Direction::Input => {
                    ins += 1;
                    ins - 1
                }
            };
            for kind in [Kind::Volume, Kind::Switch] {
                list.push(Control {
                    stream: id,
                    kind,
                    direction: s.direction,
                    index,
                });
            }
        }
        let values = list
            .iter()
            .map(|c| {
                std::sync::atomic::AtomicI32::new(match c.kind {
                    Kind::Volume => VOLUME_MAX,
                    Kind::Switch => 1,
                })
            })
            .collect();
        let gains = streams
            .iter()
            .map(|_| AtomicU64::new(1.0f64.to_bits()))
            .collect();
        Self {
            list,
            values,
            gains,
        }
    }

    /// The gain of stream `s`'s samples.
    pub fn gain(&self, stream: u32) -> f64 {
        self.gains
            .get(stream as usize)
            .map_or(1.0, |g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    fn get(&self, id: u32) -> Result<&Control, Error> {
        self.list.get(id as usize).ok_or(Error::OutOfRange {
            what: "control",
            start: id,
            count: 1,
            total: self.list.len(),
        })
    }

    /// The value of control `id`.
    pub fn value(&self, id: u32) -> Result<i32, Error> {
        self.get(id)?;
        Ok(self.values[id as usize].load(Ordering::Relaxed))
    }

    /// Every value, by id (for the migration state).
    pub fn values(&self) -> Vec<i32> {
        (0u32..)
            .zip(&self.values)
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .collect()
    }

    /// Set control `id`; refuses values out of range. Returns whether it
    /// changed.
    pub fn set(&self, id: u32, value: i32) -> Result<bool, Error> {
        let c = self.get(id)?;
        let range = match c.kind {
            Kind::Volume => 0..=VOLUME_MAX,
            Kind::Switch => 0..=1,
        };
        if !range.contains(&value) {
            return Err(Error::BadParams {
                stream: c.stream,
                why: format!("control {id} value {value} is out of range"),
            });
        }
        let old = self.values[id as usize].swap(value, Ordering::Relaxed);
        self.update_gain(c.stream);
        Ok(old != value)
    }

    fn update_gain(&self, stream: u32) {
        let base = stream as usize * 2;
        let volume = self
            .values
            .get(base)
            .map_or(VOLUME_MAX, |v| v.load(Ordering::Relaxed));
        let on = self
            .values
            .get(base + 1)
            .map_or(1, |v| v.load(Ordering::Relaxed));
        let gain = if on == 0 || volume == 0 {
            0.0
        } else {
            let cdb = f64::from((volume - VOLUME_MAX) * VOLUME_STEP_CDB);
            10f64.powf(cdb / 2000.0)
        };
        if let Some(g) = self.gains.get(stream as usize) {
            g.store(gain.to_bits(), Ordering::Relaxed);
        }
    }

    /// `virtio_snd_ctl_info` of every control.
    pub fn infos(&self) -> Vec<Vec<u8>> {
        self.list
            .iter()
            .map(|c| {
                let mut info = CtlInfo::default();
                let name = match (c.direction, c.kind) {
                    (Direction::Output, Kind::Volume) => "Playback Volume",
                    (Direction::Output, Kind::Switch) => "Playback Switch",
                    (Direction::Input, Kind::Volume) => "Capture Volume",
                    (Direction::Input, Kind::Switch) => "Capture Switch",
                };
                info.name[..name.len()].copy_from_slice(name.as_bytes());
                let role = match c.kind {
                    Kind::Volume => ctl::ROLE_VOLUME,
                    Kind::Switch => ctl::ROLE_MUTE,
                };
                info.role = ((role << 1) | u32::from(c.direction.wire())).into();
                info.count = 1.into();
                info.index = c.index.into();
                match c.kind {
                    Kind::Volume => {
                        info.type_ = ctl::TYPE_INTEGER.into();
                        info.access =
                            (ctl::ACCESS_READ | ctl::ACCESS_WRITE | ctl::ACCESS_TLV_READ).into();
                        info.min = 0.into();
                        info.max = u32::try_from(VOLUME_MAX).unwrap_or(100).into();
                        info.step = 1.into();
                    }
                    Kind::Switch => {
                        info.type_ = ctl::TYPE_BOOLEAN.into();
                        info.access = (ctl::ACCESS_READ | ctl::ACCESS_WRITE).into();
                    }
                }
                info.as_slice().to_vec()
            })
            .collect()
    }

    /// `virtio_snd_ctl_value` of control `id`.
    pub fn read(&self, id: u32) -> Result<Vec<u8>, Error> {
        let mut value = vec![0u8; CTL_VALUE_SIZE];
        value[..4].copy_from_slice(&self.value(id)?.to_le_bytes());
        Ok(value)
    }

    /// Apply a `virtio_snd_ctl_value` to control `id`.
    pub fn write(&self, id: u32, value: &[u8]) -> Result<bool, Error> {
        let v = value
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            .ok_or(Error::Short {
                code: crate::virtio::code::CTL_WRITE,
                len: value.len(),
            })?;
        self.set(id, v)
    }

    /// The metadata (TLV) of control `id`: the dB scale of a volume.
    pub fn tlv(&self, id: u32) -> Result<Vec<u8>, Error> {
        match self.get(id)?.kind {
            Kind::Volume => {
                let mut out = Vec::with_capacity(16);
                out.extend_from_slice(&ctl::TLV_DB_SCALE.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&VOLUME_MIN_CDB.to_le_bytes());
                let step = u32::try_from(VOLUME_STEP_CDB).unwrap_or(50) | ctl::TLV_DB_SCALE_MUTE;
                out.extend_from_slice(&step.to_le_bytes());
                Ok(out)
            }
            Kind::Switch => Err(Error::NotSupported("metadata of a switch")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls() -> Controls {
        Controls::new(&[
            StreamSpec::default_for(Direction::Output),
            StreamSpec::default_for(Direction::Input),
            StreamSpec::default_for(Direction::Output),
        ])
    }

    #[test]
    fn names_and_indices_follow_alsa() {
        let c = controls();
        let names: Vec<(String, u32)> = c
            .infos()
            .iter()
            .map(|b| {
                let info = CtlInfo::from_slice(b).unwrap();
                let end = info.name.iter().position(|&x| x == 0).unwrap();
                (
                    String::from_utf8(info.name[..end].to_vec()).unwrap(),
                    info.index.to_native(),
                )
            })
            .collect();
        assert_eq!(names[0], ("Playback Volume".into(), 0));
        assert_eq!(names[3], ("Capture Switch".into(), 0));
        assert_eq!(names[4], ("Playback Volume".into(), 1));
    }

    #[test]
    fn role_carries_the_direction_in_its_low_bit() {
        let c = controls();
        let infos = c.infos();
        let info = CtlInfo::from_slice(&infos[2]).unwrap();
        assert_eq!(info.role.to_native(), (ctl::ROLE_VOLUME << 1) | 1);
    }

    #[test]
    fn defaults_are_full_volume_on_and_unity_gain() {
        let c = controls();
        assert_eq!(c.value(0).unwrap(), VOLUME_MAX);
        assert_eq!(c.value(1).unwrap(), 1);
        assert_eq!(c.gain(0), 1.0);
    }

    #[test]
    fn volume_is_half_a_decibel_per_step_and_zero_mutes() {
        let c = controls();
        c.set(0, 88).unwrap();
        assert!((c.gain(0) - 0.5012).abs() < 0.001, "{}", c.gain(0));
        c.set(0, 0).unwrap();
        assert_eq!(c.gain(0), 0.0);
    }

    #[test]
    fn switch_off_mutes_only_its_stream() {
        let c = controls();
        c.set(3, 0).unwrap();
        assert_eq!(c.gain(1), 0.0);
        assert_eq!(c.gain(0), 1.0);
    }

    #[test]
    fn out_of_range_values_and_ids_are_bad_msg() {
        let c = controls();
        assert!(c.set(0, 101).is_err());
        assert!(c.set(1, 2).is_err());
        assert!(c.set(6, 1).is_err());
        assert!(c.read(6).is_err());
        assert!(c.write(0, &[1, 2]).is_err());
    }

    #[test]
    fn volume_tlv_is_a_db_scale_with_mute() {
        let tlv = controls().tlv(0).unwrap();
        assert_eq!(tlv.len(), 16);
        assert_eq!(&tlv[..4], &1u32.to_le_bytes());
        assert_eq!(&tlv[8..12], &(-5000i32).to_le_bytes());
        assert_eq!(
            controls().tlv(1).unwrap_err().status(),
            crate::virtio::Status::NotSupp
        );
    }
}
