// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-test-frontend`: poke a vhost-user back end by hand.
//!
//! ```text
//! vhost-device-test-frontend --socket-path /tmp/rng.sock info
//! vhost-device-test-frontend --socket-path /tmp/rng.sock read --bytes 64
//! vhost-device-test-frontend --socket-path /tmp/vsock.sock vsock-send --port 1234 --bytes 1048576
//! vhost-device-test-frontend --socket-path /tmp/can.sock can-send 123#DEADBEEF 123##1AABB
//! vhost-device-test-frontend --socket-path /tmp/can.sock can-recv --count 2
//! vhost-device-test-frontend --socket-path /tmp/i2c.sock i2c-transfer w1@0x50 0x00 r4@0x50
//! echo names | vhost-device-test-frontend --socket-path /tmp/gpio.sock gpio
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vhost_device_test_frontend::can::{CanDriver, Frame, RESULT_OK};
use vhost_device_test_frontend::i2c::{self, I2cGuest};
use vhost_device_test_frontend::vsock::VsockGuest;
use vhost_device_test_frontend::{Error, Options, Session};

/// A vhost-user front end and virtio driver with no VM.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Back-end socket to connect to
    #[arg(long, value_name = "PATH")]
    socket_path: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Negotiate and print features, protocol features, queues and config space
    Info {
        /// Config-space bytes to read
        #[arg(long, default_value_t = 0)]
        config_size: u32,
    },
    /// Read bytes from a device that fills writable buffers (virtio-rng) and
    /// write them to stdout as hex; fails if the device keeps answering with
    /// nothing
    Read {
        /// How many bytes
        #[arg(long, default_value_t = 64)]
        bytes: u32,
        /// Queue to use
        #[arg(long, default_value_t = 0)]
        queue: usize,
    },
    /// Play a vsock guest: connect to host (CID 2) port PORT, send BYTES
    /// pseudo-random bytes, print `SENT <bytes> <crc32>`
    VsockSend(VsockArgs),
    /// Play a vsock guest: accept one host connection to PORT, receive BYTES,
    /// print `RECEIVED <bytes> <crc32>`
    VsockRecv(VsockArgs),
    /// Play a sound driver: play PERIODS periods (of PERIOD_MS, default
    /// 10 ms) of a known signal on stream PLAYBACK while recording stream
    /// CAPTURE, and look for the signal in the recording (a host loopback
    /// such as snd-aloop); prints `LOOPED <bytes> AT <offset>` or fails
    SoundLoop {
        /// Playback stream
        #[arg(long, default_value_t = 0)]
        playback: u32,
        /// Capture stream
        #[arg(long, default_value_t = 1)]
        capture: u32,
        /// Periods to play
        #[arg(long, default_value_t = 100)]
        periods: usize,
        /// Periods to record beyond that (for the loop's latency)
        #[arg(long, default_value_t = 50)]
        extra: usize,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Period length in milliseconds (1 to 1000)
        #[arg(long, default_value_t = 10)]
        period_ms: u32,
    },
    /// Play an I2C guest: run one transfer, given as i2ctransfer does
    /// (`w2@0x1c 0x10 0x5a r1@0x1c`), as a group of requests linked by
    /// FAIL_NEXT; print `msg N: OK|ERR [bytes read]` for each message
    I2cTransfer {
        /// Put each request in an indirect descriptor table
        #[arg(long)]
        indirect: bool,
        /// The messages
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        msgs: Vec<String>,
    },
    /// Play a virtio-gpio driver: read commands from stdin, one a line, and
    /// answer each on stdout (`ok …` or `err …`; see
    /// `vhost_device_test_frontend::gpio`): info, names, dir, getdir, set,
    /// get, irq, arm, wait, raw
    Gpio {
        /// Give up waiting for the device after this many seconds
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Play a virtio-can driver: START the controller, send FRAMEs (cansend
    /// syntax: 123#DEADBEEF, 12345678#R4, 123##1AABB), print `SENT <frame>
    /// <result>` for each; fails unless every result is OK
    CanSend {
        /// The frames, in order
        #[arg(required = true)]
        frames: Vec<Frame>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Play a virtio-can driver: START the controller, print `STARTED`, then
    /// `RECEIVED <frame>` for every frame until COUNT; fails on timeout
    CanRecv {
        /// How many frames
        #[arg(long)]
        count: usize,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Options of the vsock guest commands.
#[derive(clap::Args, Debug)]
struct VsockArgs {
    /// The guest's CID
    #[arg(long, default_value_t = 3)]
    guest_cid: u64,
    /// Host port (vsock-send) or guest port (vsock-recv)
    #[arg(long)]
    port: u32,
    /// How many bytes
    #[arg(long)]
    bytes: u64,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn run(args: Args) -> Result<(), Error> {
    let opts = Options {
        num_queues: Some(match args.command {
            Cmd::VsockSend(_) | Cmd::VsockRecv(_) | Cmd::CanSend { .. } | Cmd::CanRecv { .. } => 3,
            Cmd::SoundLoop { .. } => 4,
            Cmd::Gpio { .. } => 2,
            _ => 1,
        }),
        ..Options::default()
    };
    let mut s = Session::start(&args.socket_path, &opts)?;
    match args.command {
        Cmd::Info { config_size } => {
            println!("device features:   {:#018x}", s.device_features);
            println!("acked features:    {:#018x}", s.features);
            println!("protocol features: {:?}", s.protocol);
            println!("queues:            {:?}", s.max_queues);
            if config_size > 0 {
                println!("config:            {:02x?}", s.get_config(0, config_size)?);
            }
        }
        Cmd::Read { bytes, queue } => {
            let got = s.read_bytes(queue, bytes, Duration::from_secs(10))?;
            let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(std::io::stdout(), "{hex}");
        }
        Cmd::SoundLoop {
            playback,
            capture,
            periods,
            extra,
            timeout,
            period_ms,
        } => {
            let mut g =
                vhost_device_test_frontend::sound::SoundGuest::new(s).with_period_ms(period_ms);
            let r = g.loopback(
                playback,
                capture,
                periods,
                extra,
                Duration::from_secs(timeout),
            )?;
            match r.offset {
                Some(at) => {
                    let _ = writeln!(std::io::stdout(), "LOOPED {} AT {at}", r.played);
                }
                None => {
                    return Err(Error::GuestAccess(
                        0,
                        format!(
                            "the {} bytes played are not in the {} bytes recorded (first period at, equal bytes from there: {:?})",
                            r.played, r.recorded, r.first_period
                        ),
                    ))
                }
            }
        }
        Cmd::Gpio { timeout } => {
            let mut g = vhost_device_test_frontend::gpio::GpioDriver::new(s)?;
            g.set_timeout(Duration::from_secs(timeout));
            let mut out = std::io::stdout();
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "quit" {
                    break;
                }
                let answer = g.command(&line);
                if writeln!(out, "{answer}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
        Cmd::VsockSend(v) => {
            let mut g = VsockGuest::new(s, v.guest_cid)?;
            let crc = g.send_to_host(50_000, v.port, v.bytes, Duration::from_secs(v.timeout))?;
            let _ = writeln!(std::io::stdout(), "SENT {} {crc:08x}", v.bytes);
        }
        Cmd::VsockRecv(v) => {
            let mut g = VsockGuest::new(s, v.guest_cid)?;
            let crc = g.recv_from_host(v.port, v.bytes, Duration::from_secs(v.timeout))?;
            let _ = writeln!(std::io::stdout(), "RECEIVED {} {crc:08x}", v.bytes);
        }
        Cmd::I2cTransfer { indirect, msgs } => {
            let msgs = i2c::parse_transfer(&msgs)
                .map_err(|e| Error::GuestAccess(0, format!("bad transfer: {e}")))?;
            let mut g = I2cGuest::new(s)?;
            g.indirect = indirect;
            let replies = g.transfer(&msgs, Duration::from_secs(10))?;
            let mut out = std::io::stdout();
            for (n, r) in replies.iter().enumerate() {
                let status = match r.status {
                    i2c::MSG_OK => "OK".to_string(),
                    i2c::MSG_ERR => "ERR".to_string(),
                    other => format!("status {other}"),
                };
                let data: String = if r.status == i2c::MSG_OK {
                    r.data.iter().map(|b| format!(" {b:#04x}")).collect()
                } else {
                    String::new()
                };
                let _ = writeln!(out, "msg {n}: {status}{data}");
            }
        }
        Cmd::CanSend { frames, timeout } => {
            let timeout = Duration::from_secs(timeout);
            let mut d = CanDriver::new(s, 16)?;
            start(&mut d, timeout)?;
            let mut failed = None;
            for f in &frames {
                let result = d.transmit(f, timeout)?;
                if result != RESULT_OK && failed.is_none() {
                    failed = Some(Error::CanNotOk {
                        what: format!("frame {f}"),
                        result,
                    });
                }
                let _ = writeln!(std::io::stdout(), "SENT {f} {result}");
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Cmd::CanRecv { count, timeout } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            let mut d = CanDriver::new(s, 64)?;
            start(&mut d, Duration::from_secs(timeout))?;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "STARTED").and_then(|()| out.flush());
            for _ in 0..count {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let f = d.recv(left)?;
                let _ = writeln!(out, "RECEIVED {f}").and_then(|()| out.flush());
            }
        }
    }
    Ok(())
}

/// START the controller of a CAN device.
fn start(d: &mut CanDriver, timeout: Duration) -> Result<(), Error> {
    match d.start(timeout)? {
        RESULT_OK => Ok(()),
        result => Err(Error::CanNotOk {
            what: "START".into(),
            result,
        }),
    }
}

fn main() -> ExitCode {
    env_logger::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("vhost-device-test-frontend: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
