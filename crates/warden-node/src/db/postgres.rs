//! A PostgreSQL connection through the database service: the client's
//! startup packet names the database user and database; auth decides and
//! signs a client certificate; the service opens the database with it
//! (TLS, `hostssl ... cert`) and relays, auditing each statement.

use super::{audit_writer, fill, query_event, Conn, Session};
use anyhow::{bail, Context};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_db::postgres::{
    fatal, parse_startup, parse_startup_reply, BackendDecoder, FrontendDecoder, QueryLog, Startup,
    StartupReply,
};
use warden_types::audit::{codes, AuditEvent};

/// PostgreSQL's SSLRequest packet.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
use super::{AUDIT_QUEUE, CONNECT_TIMEOUT};

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
        let start = session
            .event(
                codes::DB_SESSION_START,
                format!(
                    "{} connected to database {} as {db_user}",
                    self.user, self.db.name
                ),
            )
            .with("roles", granted.roles.clone());
        self.identity.emit(start).await;

        let (_registered, mut end_rx) = self.register(&session, &granted.roles);
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let auditor = tokio::spawn(audit_writer(self.identity.clone(), rx));
        let log = Arc::new(Mutex::new(QueryLog::new()));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let ended = tokio::select! {
            r = upstream(&mut cr, &mut sw, &log, &session, &tx) => r.err().map(|e| format!("{e:#}")),
            r = downstream(&mut sr, &mut cw, &reply, &log, &session, &tx) => r.err().map(|e| format!("{e:#}")),
            why = end_rx.recv() => {
                let why = why.unwrap_or_else(|| "ended".into());
                let _ = cw
                    .write_all(&fatal("57P01", &format!("warden: session terminated: {why}")))
                    .await;
                let _ = cw.flush().await;
                let _ = cw.shutdown().await;
                let ev = session.event(codes::DB_SESSION_TERMINATED, why.clone());
                let _ = tx.send(ev).await;
                Some(why)
            }
        };
        let mut end = session.event(
            codes::DB_SESSION_END,
            format!("{} left database {}", self.user, self.db.name),
        );
        if let Some(why) = ended {
            end = end.with("reason", why);
        }
        let _ = tx.send(end).await;
        drop(tx);
        let _ = auditor.await;
        Ok(())
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

/// Client to database: every message decoded (a simple query is named as
/// sent), then passed on.
async fn upstream<R, W>(
    r: &mut R,
    w: &mut W,
    log: &Mutex<QueryLog>,
    session: &Session,
    tx: &tokio::sync::mpsc::Sender<AuditEvent>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut decoder = FrontendDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        let (messages, err) = decoder.push(&buf[..n]);
        let mut records = Vec::new();
        {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            for m in &messages {
                if let Some(q) = log.client(m)? {
                    records.push(q);
                }
            }
        }
        for q in records {
            tx.send(query_event(session, q)).await?;
        }
        if let Some(e) = err {
            bail!("the client sent {e}");
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
    }
}

/// Database to client: message types followed (an extended-protocol
/// statement is named when the server completes it), then passed on.
async fn downstream<R, W>(
    r: &mut R,
    w: &mut W,
    leftover: &[u8],
    log: &Mutex<QueryLog>,
    session: &Session,
    tx: &tokio::sync::mpsc::Sender<AuditEvent>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut decoder = BackendDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = leftover.to_vec();
    loop {
        let n = if pending.is_empty() {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                let _ = w.shutdown().await;
                return Ok(());
            }
            n
        } else {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            pending.drain(..n);
            n
        };
        let (tags, err) = decoder.push(&buf[..n]);
        let mut records = Vec::new();
        {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            for tag in tags {
                if let Some(q) = log.server(tag)? {
                    records.push(q);
                }
            }
        }
        for q in records {
            tx.send(query_event(session, q)).await?;
        }
        if let Some(e) = err {
            bail!("the database sent {e}");
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
    }
}
