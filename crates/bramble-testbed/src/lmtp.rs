//! Delivering raw messages straight into testbed mailboxes over LMTP
//! (Dovecot's delivery protocol, RFC 2033), for tests and `bramble bench
//! mail`: no SMTP size limits or queueing in between, and the moment the
//! server accepts the message is known exactly.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One LMTP connection; several messages can go through it.
#[derive(Debug)]
pub struct Lmtp {
    stream: BufReader<TcpStream>,
}

/// What went wrong delivering.
#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("LMTP connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the LMTP server answered `{0}`")]
    Refused(String),
}

impl Lmtp {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Lmtp, LmtpError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut lmtp = Lmtp {
            stream: BufReader::new(tcp),
        };
        lmtp.expect(2).await?;
        lmtp.command("LHLO localhost\r\n", 2).await?;
        Ok(lmtp)
    }

    /// Reads one (possibly multi-line) reply; its code must start with `class`.
    async fn expect(&mut self, class: u8) -> Result<String, LmtpError> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(LmtpError::Refused("connection closed".into()));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        if all.as_bytes().first() == Some(&(b'0' + class)) {
            Ok(all)
        } else {
            Err(LmtpError::Refused(all.trim().to_owned()))
        }
    }

    async fn command(&mut self, line: &str, class: u8) -> Result<String, LmtpError> {
        self.stream.get_mut().write_all(line.as_bytes()).await?;
        self.expect(class).await
    }

    /// Delivers `raw` (a whole message, CRLF or LF lines) to `to`; returns
    /// when the server has stored it.
    pub async fn deliver(&mut self, from: &str, to: &str, raw: &[u8]) -> Result<(), LmtpError> {
        self.command(&format!("MAIL FROM:<{from}>\r\n"), 2).await?;
        self.command(&format!("RCPT TO:<{to}>\r\n"), 2).await?;
        self.command("DATA\r\n", 3).await?;
        let mut body = Vec::with_capacity(raw.len() + raw.len() / 40 + 8);
        for line in raw.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.stream.get_mut().write_all(&body).await?;
        // One reply per recipient.
        self.expect(2).await?;
        Ok(())
    }
}
