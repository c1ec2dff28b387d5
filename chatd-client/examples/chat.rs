//! A terminal chat on chatd: joins a room, prints what arrives, and sends
//! every line typed as a real-time message to the whole room.
//!
//!     cargo run -p chatd-client --example chat -- --token TOKEN --room 7
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:7400`, the server's
//! default chatd listener), `--token JWT` (or `CHATD_TOKEN`; minted with
//! `POST /v1/tokens`), `--room ID` (a room the token's user is a member
//! of). Stop with Ctrl-D.

use std::process::ExitCode;

use chatd_client::{ChatClient, ChatEvent, To};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The `msgtype` this example sends (opaque to the server).
const TEXT: u8 = 1;

struct Args {
    addr: String,
    token: String,
    room: u64,
}

fn args() -> Result<Args, String> {
    let mut addr = "127.0.0.1:7400".to_string();
    let mut token = std::env::var("CHATD_TOKEN").unwrap_or_default();
    let mut room = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--token" => token = value()?,
            "--room" => room = Some(value()?.parse().map_err(|e| format!("--room: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let room = room.ok_or("--room is required")?;
    if token.is_empty() {
        return Err("--token (or CHATD_TOKEN) is required".into());
    }
    Ok(Args { addr, token, room })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat: {e}\nusage: chat [--addr HOST:PORT] --token JWT --room ID");
            return ExitCode::from(2);
        }
    };
    let (chat, mut events) = match ChatClient::builder(args.token)
        .rooms([args.room])
        .connect(args.addr.clone())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat: cannot log in to {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut typing = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if typing => match line {
                Ok(Some(line)) if !line.is_empty() => {
                    if let Err(e) = chat.send(args.room, To::Room, TEXT, line.as_bytes()).await {
                        println!("* not sent: {e}");
                    }
                }
                Ok(Some(_)) => {}
                // End of input: leave, and print what is still on its way.
                Ok(None) | Err(_) => {
                    typing = false;
                    chat.close().await;
                }
            },
            ev = events.recv() => match ev {
                Some(ChatEvent::Message(m)) => println!(
                    "<{}:{}> {}",
                    m.from_user,
                    m.from_client,
                    String::from_utf8_lossy(&m.data)
                ),
                Some(ChatEvent::Connected { client_id }) => {
                    println!("* connected as client {client_id}")
                }
                Some(ChatEvent::Joined { chat }) => println!("* joined room {chat}"),
                Some(ChatEvent::InCall { chat, in_call }) => {
                    println!("* room {chat}: call {}", if in_call { "on" } else { "off" })
                }
                Some(ChatEvent::Left { chat }) => println!("* left room {chat}"),
                Some(ChatEvent::Error(e)) => println!("* refused: {e}"),
                Some(ChatEvent::Reconnecting { error, delay, .. }) => {
                    println!("* connection lost ({error}); reconnecting in {delay:?}")
                }
                Some(ChatEvent::Closed { error: Some(e) }) => {
                    println!("* closed: {e}");
                    return ExitCode::FAILURE;
                }
                Some(ChatEvent::Closed { error: None }) | None => return ExitCode::SUCCESS,
                Some(other) => println!("* {other:?}"),
            },
        }
    }
}
