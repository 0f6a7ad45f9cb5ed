//! A PostgreSQL connection through the database service: the client's
//! startup packet names the database user and database; auth decides and
//! signs a client certificate; the service opens the database with it
//! (TLS, `hostssl ... cert`) and relays, auditing each statement.

use super::{fill, Audit, Conn, Session};
use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_db::postgres::{
    fatal, parse_startup, parse_startup_reply, BackendDecoder, FrontendDecoder, QueryLog, Startup,
    StartupReply,
};
use warden_db::QueryRecord;
use warden_types::audit::codes;

/// PostgreSQL's SSLRequest packet.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
use super::CONNECT_TIMEOUT;

impl Conn {
    pub(super) async fn run_postgres<C>(self, mut client: C) -> anyhow::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The startup packet: TLS and GSSAPI requests are answered "no"
        // (the connection is already TLS, end to end to this service).
        let mut buf = Vec::new();
        let (startup, packet) = loop {
            match parse_startup(&buf) {
                Ok(Some((Startup::SslRequest | Startup::GssEncRequest, n))) => {
                    buf.drain(..n);
                    client.write_all(b"N").await?;
                    client.flush().await?;
                }
                Ok(Some((Startup::Cancel { .. }, _))) => {
                    bail!("query cancel requests are not passed on");
                }
                Ok(Some((s, n))) => break (s, buf.drain(..n).collect::<Vec<u8>>()),
                Ok(None) => {
                    tokio::time::timeout(CONNECT_TIMEOUT, fill(&mut client, &mut buf, "client"))
                        .await
                        .context("the client sent no startup packet")??
                }
                Err(e) => {
                    let _ = client
                        .write_all(&fatal("08P01", &format!("warden: {e}")))
                        .await;
                    bail!("bad startup packet: {e}");
                }
            }
        };
        let db_user = startup.param("user").unwrap_or_default().to_string();
        let db_name = startup.param("database").unwrap_or(&db_user).to_string();
        let session = self.session(&db_user, &db_name);
        if startup.param("replication").is_some() {
            return self
                .refuse_postgres(
                    &mut client,
                    &session,
                    "28000",
                    "replication connections are not passed on".into(),
                )
                .await;
        }

        // Auth decides with the user's live roles, and signs.
        let key = warden_ca::ClientKey::generate();
        let granted = match self.certificate(&key, &db_user, &db_name).await {
            Ok(g) => g,
            Err((code, why)) => {
                return self.refuse_postgres(&mut client, &session, code, why).await
            }
        };

        // The database, with the certificate.
        let mut server = match self.connect(&granted, &key).await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("cannot open database {}: {e:#}", self.db.name);
                return self
                    .refuse_postgres(&mut client, &session, "08006", why)
                    .await;
            }
        };
        server.write_all(&packet).await?;
        server.flush().await?;
        // Its answers, passed on, up to ReadyForQuery.
        let mut reply = Vec::new();
        loop {
            match parse_startup_reply(&reply) {
                Ok(Some((r, n))) => {
                    let message: Vec<u8> = reply.drain(..n).collect();
                    match r {
                        StartupReply::AuthenticationRequest(code) => {
                            let why = format!(
                                "database {} asked for a password (authentication code {code}); Warden signs in with a certificate: give its user a 'hostssl ... cert' line in pg_hba.conf",
                                self.db.name
                            );
                            return self
                                .refuse_postgres(&mut client, &session, "28000", why)
                                .await;
                        }
                        StartupReply::Error(m) => {
                            client.write_all(&message).await?;
                            client.flush().await?;
                            let ev = session.event(
                                codes::DB_SESSION_REJECTED,
                                format!("the database refused: {m}"),
                            );
                            self.identity.emit(ev).await;
                            return Ok(());
                        }
                        StartupReply::Ready => {
                            client.write_all(&message).await?;
                            client.flush().await?;
                            break;
                        }
                        _ => client.write_all(&message).await?,
                    }
                }
                Ok(None) => {
                    tokio::time::timeout(CONNECT_TIMEOUT, fill(&mut server, &mut reply, "database"))
                        .await
                        .context("the database did not finish the startup")??
                }
                Err(e) => bail!("the database's startup: {e}"),
            }
        }
        let audit = PgAudit {
            front: FrontendDecoder::new(),
            back: BackendDecoder::new(),
            log: QueryLog::new(),
        };
        // What the client sent after its startup packet, without waiting
        // for the answer, goes on first.
        self.relay(
            &session,
            &granted.roles,
            (client, server),
            (buf, reply),
            audit,
        )
        .await
    }

    /// Tells the client why, in PostgreSQL's words, and audits it.
    async fn refuse_postgres<C: AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        session: &Session,
        code: &str,
        why: String,
    ) -> anyhow::Result<()> {
        let _ = client
            .write_all(&fatal(code, &format!("warden: {why}")))
            .await;
        let _ = client.shutdown().await;
        self.identity
            .emit(session.event(codes::DB_SESSION_REJECTED, why.clone()))
            .await;
        tracing::info!(user = %self.user, database = %self.db.name, reason = %why, "database connection refused");
        Ok(())
    }

    /// Opens the database over TLS with the connection's certificate,
    /// verifying the database's own certificate.
    async fn connect(
        &self,
        granted: &warden_types::api::DbCertResponse,
        key: &warden_ca::ClientKey,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let (config, name) = super::tls_to_database(&self.db, granted, key)?;
        let addr = format!("{}:{}", self.db.host, self.db.port);
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .with_context(|| format!("{addr} did not answer"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&SSL_REQUEST).await?;
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, tcp.read_u8())
            .await
            .context("the database did not answer its SSL request")?
            .context("the database closed the connection")?;
        if answer != b'S' {
            bail!("it does not accept TLS: set ssl = on (and a certificate) in postgresql.conf");
        }
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .context("TLS with the database timed out")?
        .context("TLS with the database")?;
        Ok(tls)
    }
}

/// PostgreSQL's side of the relay: client messages decoded (a simple
/// query is named as sent), server message types followed (an
/// extended-protocol statement is named when the server completes it).
struct PgAudit {
    front: FrontendDecoder,
    back: BackendDecoder,
    log: QueryLog,
}

impl Audit for PgAudit {
    fn client(&mut self, bytes: &[u8]) -> (Vec<QueryRecord>, Option<String>) {
        let (messages, err) = self.front.push(bytes);
        let mut out = Vec::new();
        for m in &messages {
            match self.log.client(m) {
                Ok(Some(q)) => out.push(q),
                Ok(None) => {}
                Err(e) => return (out, Some(format!("the client sent {e}"))),
            }
        }
        (out, err.map(|e| format!("the client sent {e}")))
    }

    fn server(&mut self, bytes: &[u8]) -> (Vec<QueryRecord>, Option<String>) {
        let (tags, err) = self.back.push(bytes);
        let mut out = Vec::new();
        for tag in tags {
            match self.log.server(tag) {
                Ok(Some(q)) => out.push(q),
                Ok(None) => {}
                Err(e) => return (out, Some(format!("the database sent {e}"))),
            }
        }
        (out, err.map(|e| format!("the database sent {e}")))
    }

    fn farewell(&self, why: &str) -> Option<Vec<u8>> {
        Some(fatal(
            "57P01",
            &format!("warden: session terminated: {why}"),
        ))
    }
}
