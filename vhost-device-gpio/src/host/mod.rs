// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The GPIO chip behind a device.
//!
//! [`GpioHost`] is the narrow, uAPI-shaped interface the device uses: claim a
//! line as input (with or without edge detection) or output, release it, read
//! and write values, and collect the edges the host saw. Two chips implement
//! it:
//!
//! - [`linux::LibgpiodHost`]: a real kernel GPIO chip through libgpiod v2 (one
//!   line request per claimed line; its descriptor is what the worker's epoll
//!   watches for edges);
//! - [`mock::SimHost`]: a simulated chip (`sim:LINES[:NAMES]`) whose inputs a
//!   test or a person drives through a control socket; it signals edges with
//!   one eventfd for the whole chip.
//!
//! The GPIO uAPI has edge detection only; level interrupts are emulated on
//! top of it by the device (see `device::lines`).

pub mod linux;
pub mod mock;

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

/// Which edges a claimed input line reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EdgeDetect {
    /// None.
    #[default]
    None,
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
    /// Both.
    Both,
}

impl EdgeDetect {
    /// Whether a `rising` (else falling) edge is reported.
    pub fn covers(self, rising: bool) -> bool {
        match self {
            Self::None => false,
            Self::Rising => rising,
            Self::Falling => !rising,
            Self::Both => true,
        }
    }

    /// The name used by the control protocol and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Rising => "rising",
            Self::Falling => "falling",
            Self::Both => "both",
        }
    }
}

/// How a line is claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineMode {
    /// Not claimed: the host line is released.
    Released,
    /// Input, reporting these edges.
    Input(EdgeDetect),
    /// Output driving this value.
    Output(bool),
}

/// Edges seen on one line since they were last collected (flags, not counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edges {
    /// At least one rising edge.
    pub rising: bool,
    /// At least one falling edge.
    pub falling: bool,
}

impl Edges {
    /// Whether any edge was seen.
    pub fn any(self) -> bool {
        self.rising || self.falling
    }
}

/// A GPIO chip, as one device connection uses it.
///
/// Every method is non-blocking. Errors are about the host line (busy,
/// gone, refused); the device answers the request that caused them with
/// `VIRTIO_GPIO_STATUS_ERR`.
pub trait GpioHost: Send {
    /// Number of lines.
    fn num_lines(&self) -> u16;

    /// The name of `line` ("" when it has none).
    fn line_name(&self, line: u16) -> String;

    /// Claim, reconfigure or release `line`.
    fn set_mode(&mut self, line: u16, mode: LineMode) -> io::Result<()>;

    /// The value of a claimed line (an output reads back what it drives).
    fn value(&mut self, line: u16) -> io::Result<bool>;

    /// Drive a line claimed as output.
    fn set_value(&mut self, line: u16, value: bool) -> io::Result<()>;

    /// Collect (and forget) the edges seen on `line` since the last call.
    fn take_edges(&mut self, line: u16) -> io::Result<Edges>;

    /// A descriptor that becomes readable when `line` has edges to collect
    /// (the line's own request), if the chip has one per line.
    fn line_event_fd(&self, line: u16) -> Option<BorrowedFd<'_>>;

    /// A descriptor that becomes readable when any line has edges, if the
    /// chip has one for the whole chip.
    fn chip_event_fd(&self) -> Option<BorrowedFd<'_>>;

    /// After [`Self::chip_event_fd`] fired: clear it and return the lines that
    /// have edges to collect.
    fn chip_events(&mut self) -> io::Result<Vec<u16>>;
}

/// One entry of `--device-list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChipSpec {
    /// A character device path (`/dev/gpiochipN`).
    Path(PathBuf),
    /// A chip number `N` (`/dev/gpiochipN`).
    Number(u32),
    /// A chip label, as `gpiodetect` prints it.
    Label(String),
    /// A simulated chip: its line names (empty strings for unnamed lines).
    Sim(Vec<String>),
}

/// The most lines a simulated chip may have.
pub const MAX_SIM_LINES: usize = 1024;
/// The longest line name kept (the kernel's limit is 31 characters).
pub const MAX_NAME_LEN: usize = 31;

impl std::str::FromStr for ChipSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("sim:") {
            let (count, names) = match rest.split_once(':') {
                Some((c, n)) => (c, Some(n)),
                None => (rest, None),
            };
            let lines: usize = count
                .parse()
                .map_err(|_| format!("{s}: the line count `{count}` is not a number"))?;
            if lines == 0 || lines > MAX_SIM_LINES {
                return Err(format!(
                    "{s}: a simulated chip has 1 to {MAX_SIM_LINES} lines"
                ));
            }
            let mut list: Vec<String> = names
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if list.len() > lines {
                return Err(format!("{s}: {} names for {lines} lines", list.len()));
            }
            for name in &list {
                if name.len() > MAX_NAME_LEN || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "{s}: line name `{name}` must be at most {MAX_NAME_LEN} printable ASCII characters without spaces"
                    ));
                }
            }
            list.resize(lines, String::new());
            return Ok(Self::Sim(list));
        }
        if s.is_empty() {
            return Err("an empty chip name".into());
        }
        if s.starts_with('/') {
            return Ok(Self::Path(s.into()));
        }
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Self::Number(n));
        }
        Ok(Self::Label(s.to_owned()))
    }
}

/// The GET_LINE_NAMES block of a chip (5.18.6.1): one NUL-terminated string
/// per line, in line order; empty when no line has a name.
///
/// Names are made valid for the guest: bytes outside 7-bit printable ASCII
/// become `?`, names are cut at [`MAX_NAME_LEN`], and a name that repeats an
/// earlier line's is dropped (Linux refuses duplicate names), with a warning.
pub fn names_block(names: &[String]) -> Vec<u8> {
    if names.iter().all(String::is_empty) {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    let mut block = Vec::new();
    for (line, name) in names.iter().enumerate() {
        let clean: String = name
            .chars()
            .take(MAX_NAME_LEN)
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if !clean.is_empty() && !seen.insert(clean.clone()) {
            log::warn!(
                "line {line}: name {clean:?} repeats an earlier line's; the guest sees it unnamed"
            );
        } else {
            block.extend_from_slice(clean.as_bytes());
        }
        block.push(0);
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_spec_with_names_pads_unnamed_lines() {
        let spec: ChipSpec = "sim:4:led,button".parse().unwrap();
        assert_eq!(
            spec,
            ChipSpec::Sim(vec![
                "led".into(),
                "button".into(),
                String::new(),
                String::new()
            ])
        );
    }

    #[test]
    fn sim_spec_refuses_zero_lines_and_too_many_names() {
        assert!("sim:0".parse::<ChipSpec>().is_err());
        assert!("sim:1:a,b".parse::<ChipSpec>().is_err());
        assert!("sim:x".parse::<ChipSpec>().is_err());
        assert!("sim:2:has space".parse::<ChipSpec>().is_err());
    }

    #[test]
    fn chip_specs_by_path_number_and_label() {
        assert_eq!(
            "/dev/gpiochip3".parse::<ChipSpec>().unwrap(),
            ChipSpec::Path("/dev/gpiochip3".into())
        );
        assert_eq!("2".parse::<ChipSpec>().unwrap(), ChipSpec::Number(2));
        assert_eq!(
            "gpio-sim.0-node0".parse::<ChipSpec>().unwrap(),
            ChipSpec::Label("gpio-sim.0-node0".into())
        );
    }

    #[test]
    fn names_block_is_nul_terminated_in_line_order() {
        let block = names_block(&["a".into(), String::new(), "bc".into()]);
        assert_eq!(block, b"a\0\0bc\0");
    }

    #[test]
    fn names_block_without_any_name_is_empty() {
        assert!(names_block(&[String::new(), String::new()]).is_empty());
    }

    #[test]
    fn duplicate_and_non_ascii_names_are_made_valid() {
        let block = names_block(&["x".into(), "x".into(), "é".into()]);
        assert_eq!(block, b"x\0\0?\0");
    }
}
