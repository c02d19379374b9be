// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-can-bus`: the host's side of a software CAN bus — send
//! frames, print what is on the bus, inject error frames, or run a hub.
//!
//! ```text
//! vhost-device-can-bus --bus /tmp/canbus dump
//! vhost-device-can-bus --bus /tmp/canbus send 123#DEADBEEF 1F334455#R4 100##1AABB
//! vhost-device-can-bus --bus /tmp/canbus inject busoff
//! vhost-device-can-bus --bus /tmp/canbus serve
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vhost_device_can::host::bus::{self, BusClient, Hub, Role};
use vhost_device_can::host::{CanFrame, CanHost, ErrorFrame, Received, Sent, ERR_BUSOFF};

/// The host's side of a vhost-device-can software bus.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The bus (the --bus PATH of the daemons)
    #[arg(long, value_name = "PATH")]
    bus: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print every frame on the bus, one a line in cansend syntax (error
    /// frames as ERR#CLASS); acknowledges frames like a started controller
    Dump {
        /// Exit after this many frames
        #[arg(long)]
        count: Option<u64>,
        /// Exit (with an error if --count was not reached) after this many seconds
        #[arg(long)]
        timeout: Option<u64>,
        /// Acknowledge nothing (a bus monitor)
        #[arg(long)]
        listen_only: bool,
    },
    /// Send frames (cansend syntax: 123#DEADBEEF, 12345678#R4, 123##1AABB),
    /// each once another node acknowledged the one before
    Send {
        /// The frames, in order
        #[arg(required = true)]
        frames: Vec<CanFrame>,
        /// Give up after this many seconds without an acknowledgement
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Send an error frame to every other member: `busoff`, or a class in hex
    Inject {
        /// busoff, or a CAN_ERR_* class such as 0x4
        what: String,
    },
    /// Run a hub in the foreground (daemons start one by themselves)
    Serve,
}

fn run(args: Args) -> Result<(), String> {
    let err = |e: std::io::Error| e.to_string();
    match args.command {
        Cmd::Serve => match Hub::bind(&args.bus).map_err(err)? {
            Some(hub) => hub.run(None).map_err(err),
            None => Err(format!(
                "another process is the hub of {}",
                args.bus.display()
            )),
        },
        Cmd::Inject { what } => {
            let class = if what == "busoff" {
                ERR_BUSOFF
            } else {
                u32::from_str_radix(what.trim_start_matches("0x"), 16)
                    .map_err(|_| format!("'{what}' is neither busoff nor a hex class"))?
            };
            bus::inject(
                &args.bus,
                ErrorFrame {
                    class,
                    data: [0; 8],
                },
            )
            .map_err(err)
        }
        Cmd::Send { frames, timeout } => {
            let mut c = BusClient::connect(&args.bus, Role::Node, true, bus::CONNECT_TIMEOUT)
                .map_err(err)?;
            c.set_online(true).map_err(err)?;
            for frame in frames {
                let deadline = Instant::now() + Duration::from_secs(timeout);
                while c.send(&frame).map_err(err)? == Sent::WouldBlock {
                    if Instant::now() > deadline {
                        return Err("the bus hub does not take frames".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match c.wait(left).map_err(err)? {
                        Some(Received::Echo(f)) if f.same_as(&frame) => break,
                        Some(Received::Disconnected) => return Err("the bus ended".into()),
                        Some(_) => {}
                        None => {
                            return Err(format!(
                                "{frame} was not acknowledged within {timeout} s \
                                 (no started controller on the bus?)"
                            ))
                        }
                    }
                }
            }
            Ok(())
        }
        Cmd::Dump {
            count,
            timeout,
            listen_only,
        } => {
            let role = if listen_only {
                Role::Monitor
            } else {
                Role::Node
            };
            let mut c =
                BusClient::connect(&args.bus, role, true, bus::CONNECT_TIMEOUT).map_err(err)?;
            c.set_online(true).map_err(err)?;
            let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
            let mut seen = 0u64;
            let mut out = std::io::stdout();
            while count.is_none_or(|n| seen < n) {
                let left = deadline.map_or(Duration::from_secs(3600), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                let line = match c.wait(left).map_err(err)? {
                    Some(Received::Frame(f)) => f.to_string(),
                    Some(Received::Error(e)) => format!("ERR#{:08X}", e.class),
                    Some(Received::Disconnected) => return Err("the bus ended".into()),
                    Some(_) => continue,
                    None if deadline.is_some() => {
                        return match count {
                            Some(n) => Err(format!("{seen} of {n} frames before the timeout")),
                            None => Ok(()),
                        }
                    }
                    None => continue,
                };
                seen += 1;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-device-can-bus: error: {e}");
            ExitCode::FAILURE
        }
    }
}
