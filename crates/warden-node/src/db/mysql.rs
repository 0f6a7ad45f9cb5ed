//! A MySQL/MariaDB connection through the database service. The server
//! speaks first: its greeting goes to the client without TLS and the other
//! capabilities the relay does not pass on; the client's handshake
//! response names the database user and database; auth decides and signs
//! a client certificate; the service upgrades its own connection to TLS
//! with it (`REQUIRE SUBJECT '/CN=user'`), logs in without a password and
//! relays, auditing each statement.

use super::{fill, Audit, Conn, Session, CONNECT_TIMEOUT};
use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use warden_db::mysql::{
    build::packet, err_packet, greeting_for_client, handshake_for_server, parse_command,
    parse_handshake_response, Command, Packet, PacketDecoder, QueryLog,
};
use warden_db::QueryRecord;
use warden_types::audit::codes;

/// Reads the next packet from `r` through `dec`, holding any that follow.
async fn next_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut PacketDecoder,
    held: &mut std::collections::VecDeque<Packet>,
    who: &str,
) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = held.pop_front() {
            return Ok(p);
        }
        let mut buf = Vec::new();
        tokio::time::timeout(CONNECT_TIMEOUT, fill(r, &mut buf, who))
            .await
            .with_context(|| format!("the {who} did not answer in time"))??;
        held.extend(dec.push(&buf).with_context(|| format!("the {who} sent"))?);
    }
}

/// Commands the relay refuses: another login inside the connection (the
/// database user is the one the certificate names), and every command it
/// does not know (replication, bulk execution...), which could run
/// statements the audit log would not name.
fn refused(c: &Command) -> Option<String> {
    match c {
        Command::ChangeUser => {
            Some("COM_CHANGE_USER (the database user is fixed at connect)".into())
        }
        // COM_FIELD_LIST, COM_STATISTICS, COM_PROCESS_INFO, COM_PROCESS_KILL
        Command::Other(0x04 | 0x09 | 0x0a | 0x0c) => None,
        Command::Other(code) => Some(format!("command {code:#04x}")),
        _ => None,
    }
}

impl Conn {
    pub(super) async fn run_mysql<C>(self, mut client: C) -> anyhow::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = format!("{}:{}", self.db.host, self.db.port);
        let refuse_early = |why: String| format!("cannot open database {}: {why}", self.db.name);
        let mut tcp = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let why = refuse_early(format!("cannot connect to {addr}: {e}"));
                return self.refuse_mysql(&mut client, None, 0, &why).await;
            }
            Err(_) => {
                let why = refuse_early(format!("{addr} did not answer"));
                return self.refuse_mysql(&mut client, None, 0, &why).await;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (mut sdec, mut sheld) = (PacketDecoder::new(), Default::default());
        let greeting = next_packet(&mut tcp, &mut sdec, &mut sheld, "database").await?;
        let relayed = match greeting_for_client(&greeting.payload) {
            Ok(g) => g,
            Err(e) => {
                let why = refuse_early(e.to_string());
                return self.refuse_mysql(&mut client, None, 0, &why).await;
            }
        };
        client.write_all(&packet(0, &relayed)).await?;
        client.flush().await?;

        let (mut cdec, mut cheld) = (PacketDecoder::new(), Default::default());
        let response = next_packet(&mut client, &mut cdec, &mut cheld, "client").await?;
        let hello = match parse_handshake_response(&response.payload) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let why = "the connection is already encrypted end to end: connect without TLS (mysql --ssl=0)".to_string();
                return self
                    .refuse_mysql(&mut client, None, response.seq.wrapping_add(1), &why)
                    .await;
            }
            Err(e) => {
                return self
                    .refuse_mysql(
                        &mut client,
                        None,
                        response.seq.wrapping_add(1),
                        &format!("{e}"),
                    )
                    .await
            }
        };
        let db_user = hello.user.clone();
        let db_name = hello.database.clone().unwrap_or_default();
        let session = self.session(&db_user, &db_name);
        let reply_seq = response.seq.wrapping_add(1);
        if db_name.is_empty() {
            let why = "name the database to use (mysql -D NAME; warden db connect --db-name NAME)";
            return self
                .refuse_mysql(&mut client, Some(&session), reply_seq, why)
                .await;
        }
        let key = warden_ca::ClientKey::generate();
        let granted = match self.certificate(&key, &db_user, &db_name).await {
            Ok(g) => g,
            Err((_, why)) => {
                return self
                    .refuse_mysql(&mut client, Some(&session), reply_seq, &why)
                    .await
            }
        };

        // TLS with the certificate, then the client's response without
        // its password.
        let (ssl, login) = handshake_for_server(&response.payload)?;
        tcp.write_all(&packet(1, &ssl)).await?;
        tcp.flush().await?;
        let (config, name) = super::tls_to_database(&self.db, &granted, &key)?;
        let mut server = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let why = refuse_early(format!("TLS with the database: {e} (is it set up with a certificate? see 'warden admin db cert')"));
                return self
                    .refuse_mysql(&mut client, Some(&session), reply_seq, &why)
                    .await;
            }
            Err(_) => {
                let why = refuse_early("TLS with the database timed out".into());
                return self
                    .refuse_mysql(&mut client, Some(&session), reply_seq, &why)
                    .await;
            }
        };
        server.write_all(&packet(2, &login)).await?;
        server.flush().await?;
        // Its answer: OK, ERR, or a request to switch authentication
        // method, answered with an empty password.
        let (mut sdec, mut sheld) = (PacketDecoder::new(), std::collections::VecDeque::new());
        loop {
            let p = next_packet(&mut server, &mut sdec, &mut sheld, "database").await?;
            match p.payload.first() {
                Some(0x00) => {
                    client.write_all(&packet(reply_seq, &p.payload)).await?;
                    client.flush().await?;
                    break;
                }
                Some(0xff) => {
                    client.write_all(&packet(reply_seq, &p.payload)).await?;
                    client.flush().await?;
                    let msg = String::from_utf8_lossy(p.payload.get(9..).unwrap_or_default());
                    let ev = session.event(
                        codes::DB_SESSION_REJECTED,
                        format!("the database refused: {msg}"),
                    );
                    self.identity.emit(ev).await;
                    return Ok(());
                }
                Some(0xfe) => {
                    server
                        .write_all(&packet(p.seq.wrapping_add(1), &[]))
                        .await?;
                    server.flush().await?;
                }
                _ => {
                    let why = format!(
                        "database {} wants a password for {db_user:?}; Warden signs in with a certificate: CREATE USER {db_user} REQUIRE SUBJECT '/CN={db_user}' (no password)",
                        self.db.name
                    );
                    return self
                        .refuse_mysql(&mut client, Some(&session), reply_seq, &why)
                        .await;
                }
            }
        }
        let audit = MyAudit {
            client: PacketDecoder::new(),
            server: PacketDecoder::new(),
            log: QueryLog::new(),
        };
        // Packets either side sent early are passed on first.
        let early = |held: std::collections::VecDeque<Packet>| -> Vec<u8> {
            held.into_iter()
                .flat_map(|p| warden_db::mysql::build::packets(p.seq, &p.payload))
                .collect()
        };
        let early = (early(cheld), early(sheld));
        self.relay(&session, &granted.roles, (client, server), early, audit)
            .await
    }

    /// Tells the client why in an ERR packet (sequence `seq`), and audits
    /// it when the client had said who it is.
    async fn refuse_mysql<C: AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        session: Option<&Session>,
        seq: u8,
        why: &str,
    ) -> anyhow::Result<()> {
        let err = err_packet(1045, "28000", &format!("warden: {why}"));
        let _ = client.write_all(&packet(seq, &err)).await;
        let _ = client.flush().await;
        let _ = client.shutdown().await;
        if let Some(s) = session {
            self.identity
                .emit(s.event(codes::DB_SESSION_REJECTED, why.to_string()))
                .await;
        }
        tracing::info!(user = %self.user, database = %self.db.name, reason = %why, "database connection refused");
        Ok(())
    }
}

/// MySQL's side of the relay: commands decoded and audited (a prepared
/// statement at its PREPARE and at each execute), refused ones ending the
/// connection; the server's first answer to each command read for the
/// ids of prepared statements.
struct MyAudit {
    client: PacketDecoder,
    server: PacketDecoder,
    log: QueryLog,
}

impl Audit for MyAudit {
    fn client(&mut self, bytes: &[u8]) -> (Vec<QueryRecord>, Option<String>) {
        let packets = match self.client.push(bytes) {
            Ok(p) => p,
            Err(e) => return (Vec::new(), Some(format!("the client sent {e}"))),
        };
        let mut out = Vec::new();
        for p in packets.iter().filter(|p| p.seq == 0) {
            let c = match parse_command(&p.payload) {
                Ok(c) => c,
                Err(e) => return (out, Some(format!("the client sent {e}"))),
            };
            if let Some(what) = refused(&c) {
                return (
                    out,
                    Some(format!(
                        "the client sent {what}, which Warden does not pass on"
                    )),
                );
            }
            // A prepared statement's text is audited when it is prepared
            // too, so no statement reaches the server without its text in
            // the log, whatever the server's answers (the executes that
            // follow are named by the id it gives).
            if let Command::Prepare(q) = &c {
                out.push(QueryRecord {
                    query: warden_db::audit_text(&format!("PREPARE {q}")),
                    params: Vec::new(),
                });
            }
            if let Some(q) = self.log.client(&c) {
                out.push(q);
            }
        }
        (out, None)
    }

    fn server(&mut self, bytes: &[u8]) -> (Vec<QueryRecord>, Option<String>) {
        let packets = match self.server.push(bytes) {
            Ok(p) => p,
            Err(e) => return (Vec::new(), Some(format!("the database sent {e}"))),
        };
        for p in packets.iter().filter(|p| p.seq == 1) {
            if let Err(e) = self.log.prepared(&p.payload) {
                return (Vec::new(), Some(format!("the database sent {e}")));
            }
        }
        (Vec::new(), None)
    }

    fn farewell(&self, _why: &str) -> Option<Vec<u8>> {
        // Mid-exchange, no packet the client expects could say it: the
        // connection closes, and the audit log says why.
        None
    }
}
