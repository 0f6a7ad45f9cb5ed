//! HTTP handlers of the auth API. Handlers are thin: they authorize the
//! caller and call into [`AuthServer`].

use crate::error::{AuthError, Result};
use crate::login::token_id;
use crate::resources::{self, CREDENTIALS, ROLES, TOKENS, USERS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use time::{Duration, OffsetDateTime};
use warden_ca::CaType;
use warden_policy::check_rule;
use warden_store::StoreError;
use warden_types::api::*;
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::{kind, resources as res, validate_name, verbs, V1};
use warden_types::{Document, IdentityKind, RoleSpec, TokenKind, TokenSpec, UserSpec};

/// Who is calling, from the verified client certificate.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: warden_types::Identity,
    pub addr: SocketAddr,
    /// The raw public key of the client certificate.
    pub public_key: Vec<u8>,
    /// The client certificate's notAfter (unix seconds). TLS checks it at
    /// the handshake only; a kept-alive connection outlives it.
    pub not_after: i64,
}

/// Refuses every call made after the caller's certificate expired: a
/// connection kept alive past the certificate's end must not keep its
/// rights.
async fn unexpired(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(c) = req.extensions().get::<Caller>() {
        let left = c.not_after - OffsetDateTime::now_utc().unix_timestamp();
        if left <= 0 {
            return AuthError::Unauthenticated(format!(
                "certificate expired {}; run 'warden login'",
                warden_types::duration::relative(left)
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// What a node token admits beyond joining.
#[derive(Default)]
pub(crate) struct NodeTokenOptions {
    pub addrs: Vec<String>,
    pub replace: bool,
}

/// Longest lifetime of a token an admin may create.
const MAX_TOKEN_TTL: u64 = 7 * 24 * 3600;

pub fn router(server: AuthServer) -> Router {
    Router::new()
        .serve(&endpoints::PING, ping)
        .serve(&endpoints::WHOAMI, whoami)
        .serve(&endpoints::LOGIN, login)
        .serve(&endpoints::LOGIN_CHALLENGE, login_challenge)
        .serve(&endpoints::SIGNUP_INFO, signup_info)
        .serve(&endpoints::SIGNUP, signup)
        .serve(&endpoints::USERS, list_users)
        .serve(&endpoints::CREATE_USER, create_user)
        .serve(&endpoints::USER, get_user)
        .serve(&endpoints::UPDATE_USER, update_user)
        .serve(&endpoints::DELETE_USER, delete_user)
        .serve(&endpoints::UNLOCK_USER, unlock_user)
        .serve(&endpoints::RESET_USER, reset_user)
        .serve(&endpoints::ROLES, list_roles)
        .serve(&endpoints::ROLE, get_role)
        .serve(&endpoints::PUT_ROLE, put_role)
        .serve(&endpoints::DELETE_ROLE, delete_role)
        .serve(&endpoints::TOKENS, list_tokens)
        .serve(&endpoints::CREATE_TOKEN, create_token)
        .serve(&endpoints::DELETE_TOKEN, delete_token)
        .serve(&endpoints::AUDIT_EVENTS, audit_events)
        .merge(crate::nodes::routes())
        .merge(crate::databases::routes())
        .merge(crate::locks::routes())
        .merge(crate::push::routes())
        .merge(crate::requests::routes())
        .merge(crate::config::routes())
        .merge(crate::recordings::routes())
        .merge(crate::audit_chain::routes())
        .merge(crate::backup::routes())
        .merge(crate::cas::routes())
        .merge(crate::rotation::routes())
        .merge(crate::explain::routes())
        .merge(crate::policy_sync::routes())
        .merge(crate::sessions::routes())
        .merge(crate::oidc::routes())
        .merge(crate::mfa::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            crate::locks::enforce,
        ))
        // Before any handler: a request this auth server could not finish
        // goes elsewhere before it uses up a one-time code or token.
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            crate::rotation::signing_gate,
        ))
        // Outermost: an expired certificate is refused before anything.
        .route_layer(axum::middleware::from_fn(unexpired))
        .with_state(server)
}

impl AuthServer {
    /// The roles in force for a caller: live from the store for users, from
    /// the certificate for built-in identities.
    pub(crate) fn caller_roles(&self, c: &Caller) -> Result<Vec<Document<RoleSpec>>> {
        match c.identity.kind {
            IdentityKind::User => {
                let user = self.inner.users.get(&c.identity.username).ok_or_else(|| {
                    AuthError::Unauthenticated(format!(
                        "user {} no longer exists",
                        c.identity.username
                    ))
                })?;
                Ok(self.roles(&self.effective(&user).roles))
            }
            IdentityKind::Admin => Ok(self.roles(&c.identity.roles)),
            IdentityKind::Proxy | IdentityKind::Node => Ok(Vec::new()),
        }
    }

    /// Audits a refused API call of `c`.
    pub(crate) async fn audit_denied(&self, c: &Caller, message: String) {
        self.audit(
            AuditEvent::new(
                codes::ACCESS_DENIED,
                self.cluster(),
                &c.identity.username,
                message,
            )
            .source(Some(c.addr.to_string())),
        )
        .await;
    }

    pub(crate) async fn authorize(&self, c: &Caller, resource: &str, verb: &str) -> Result<()> {
        let roles = self.caller_roles(c)?;
        let decision = check_rule(&roles, resource, verb);
        if decision.allowed {
            return Ok(());
        }
        self.audit_denied(c, format!("{verb} {resource}: {}", decision.summary()))
            .await;
        Err(AuthError::AccessDenied(format!(
            "{} may not {verb} {resource}s: {}",
            c.identity.username,
            decision.summary()
        )))
    }

    /// Refuses unless the caller may grant every role in `target` (see
    /// [`warden_policy::check_grant`]): user and role management never hands
    /// out more than the caller's granting rights.
    pub(crate) async fn authorize_grant<'a>(
        &self,
        c: &Caller,
        action: &str,
        target: impl IntoIterator<Item = &'a String>,
    ) -> Result<()> {
        // The local admin identity (data dir on the auth host) is the
        // break-glass owner of the cluster: it can always repair roles.
        if c.identity.kind == IdentityKind::Admin {
            return Ok(());
        }
        let roles = self.caller_roles(c)?;
        let traits = match c.identity.kind {
            IdentityKind::User => self
                .inner
                .users
                .get(&c.identity.username)
                .map(|u| u.spec.traits.clone())
                .unwrap_or_default(),
            _ => c.identity.traits.clone(),
        };
        let Err((role, decision)) = warden_policy::check_grant_all(&roles, &traits, target) else {
            return Ok(());
        };
        self.audit_denied(
            c,
            format!(
                "{action}: may not grant role {role}: {}",
                decision.summary()
            ),
        )
        .await;
        let what = if role == warden_policy::ANY_ROLE {
            "writing roles takes the right to grant every role (grant_roles: ['*'])".to_string()
        } else {
            format!("it involves role {role}, which you may not grant")
        };
        Err(AuthError::AccessDenied(format!(
            "{} may not {action}: {what} ({}); ask an admin whose roles list it in allow.grant_roles",
            c.identity.username,
            decision.summary()
        )))
    }

    /// Creates a one-time token; returns its secret.
    async fn new_token(
        &self,
        kind_: TokenKind,
        user: Option<String>,
        ttl_secs: u64,
        created_by: &str,
        node: NodeTokenOptions,
    ) -> Result<(String, Document<TokenSpec>)> {
        if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL {
            return Err(AuthError::BadRequest(format!(
                "token TTL must be between 1s and {}",
                warden_types::duration::HumanDuration::from_secs(MAX_TOKEN_TTL)
            )));
        }
        let secret = data_encoding::HEXLOWER.encode(&warden_ca::random_bytes::<32>());
        let (id, hash) = token_id(&secret);
        let expires = OffsetDateTime::now_utc() + Duration::seconds(ttl_secs as i64);
        let mut doc = Document::new(
            kind::TOKEN,
            id.clone(),
            TokenSpec {
                kind: kind_,
                user,
                secret_sha256: hash,
                created_by: Some(created_by.to_string()),
                addrs: node.addrs,
                replace: node.replace,
            },
        );
        doc.metadata.expires = Some(expires);
        // Kept an hour past expiry so users hear "expired", not "invalid".
        let gc = std::time::SystemTime::from(expires) + std::time::Duration::from_secs(3600);
        let rev = self
            .backend()
            .create(&format!("{TOKENS}{id}"), resources::encode(&doc), Some(gc))
            .await?;
        doc.metadata.revision = Some(rev);
        self.audit(
            AuditEvent::new(
                codes::TOKEN_CREATE,
                self.cluster(),
                created_by,
                format!("created {kind_} token {id}"),
            )
            .with("token_id", id)
            .with("token_kind", kind_.to_string())
            .with("expires", expires.unix_timestamp()),
        )
        .await;
        Ok((secret, doc))
    }

    /// A node join token, for the local node of an all-in-one cluster,
    /// allowing `addrs` (host names or IPs) in its host certificate.
    pub async fn create_node_token(
        &self,
        ttl: std::time::Duration,
        addrs: Vec<String>,
    ) -> Result<String> {
        let (secret, _) = self
            .new_token(
                TokenKind::Node,
                None,
                ttl.as_secs(),
                "warden-start",
                NodeTokenOptions {
                    addrs,
                    replace: false,
                },
            )
            .await?;
        Ok(secret)
    }

    /// Deletes the pending signup tokens of a user.
    async fn delete_signup_tokens(&self, user: &str) -> Result<()> {
        for t in resources::list::<TokenSpec>(self.backend(), TOKENS).await? {
            if t.spec.user.as_deref() == Some(user) {
                self.backend()
                    .delete(&format!("{TOKENS}{}", t.name()))
                    .await?;
            }
        }
        Ok(())
    }

    async fn check_roles_exist(&self, roles: &[String]) -> Result<()> {
        for r in roles {
            if self.backend().get(&format!("{ROLES}{r}")).await?.is_none() {
                return Err(AuthError::BadRequest(format!(
                    "role {r:?} does not exist; see 'warden admin roles ls' or create it with 'warden admin roles apply -f FILE'"
                )));
            }
        }
        Ok(())
    }
}

fn signup_response(
    user: Document<UserSpec>,
    token: String,
    token_doc: &Document<TokenSpec>,
) -> CreateUserResponse {
    CreateUserResponse {
        user,
        token: token.into(),
        token_expires: token_doc
            .metadata
            .expires
            .map(|e| e.unix_timestamp())
            .unwrap_or(0),
    }
}

/// A host name or IP address as a certificate principal.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
        && !h.starts_with('-')
}

pub(crate) fn client_addr(c: &Caller, headers: &HeaderMap) -> Option<String> {
    if c.identity.kind == IdentityKind::Proxy {
        if let Some(v) = headers
            .get(CLIENT_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            return Some(v.to_string());
        }
    }
    Some(c.addr.ip().to_string())
}

pub(crate) fn require_proxy(c: &Caller) -> Result<()> {
    if c.identity.kind == IdentityKind::Proxy {
        Ok(())
    } else {
        Err(AuthError::AccessDenied(
            "this call is made by the proxy on behalf of users; use the proxy address".into(),
        ))
    }
}

async fn ping(State(s): State<AuthServer>) -> Result<Json<PingResponse>> {
    Ok(Json(PingResponse {
        cluster: s.cluster().to_string(),
        version: warden_types::VERSION.to_string(),
        tls_ca_pems: s.tls_ca_pems().await?,
        ssh_host_ca_keys: s.authority(CaType::Host).await?.ssh_public_keys(),
        ssh_user_ca_keys: s.authority(CaType::User).await?.ssh_public_keys(),
        ca_generation: s.ca_generation().await?,
    }))
}

async fn whoami(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<WhoAmI>> {
    let current_roles = s
        .caller_roles(&c)?
        .iter()
        .map(|r| r.name().to_string())
        .collect();
    Ok(Json(WhoAmI {
        identity: c.identity,
        current_roles,
    }))
}

async fn login(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>> {
    require_proxy(&c)?;
    Ok(Json(s.login(&req, client_addr(&c, &headers)).await?))
}

async fn login_challenge(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<warden_types::api::LoginChallengeRequest>,
) -> Result<Json<warden_types::api::MfaChallengeResponse>> {
    require_proxy(&c)?;
    Ok(Json(
        s.login_challenge(&req, client_addr(&c, &headers)).await?,
    ))
}

#[derive(Deserialize)]
struct TokenBody {
    token: warden_types::Secret<String>,
}

async fn signup_info(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(body): Json<TokenBody>,
) -> Result<Json<SignupInfo>> {
    require_proxy(&c)?;
    Ok(Json(s.signup_info(body.token.expose()).await?))
}

async fn signup(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<SignupRequest>,
) -> Result<Json<SignupResponse>> {
    require_proxy(&c)?;
    let user = s.signup(&req, client_addr(&c, &headers)).await?;
    Ok(Json(SignupResponse { user }))
}

async fn list_users(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<Document<UserSpec>>>> {
    s.authorize(&c, res::USER, verbs::LIST).await?;
    Ok(Json(resources::list(s.backend(), USERS).await?))
}

async fn get_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Document<UserSpec>>> {
    s.authorize(&c, res::USER, verbs::READ).await?;
    resources::get(s.backend(), &format!("{USERS}{name}"))
        .await?
        .map(Json)
        .ok_or_else(|| AuthError::NotFound(format!("user {name} not found")))
}

async fn create_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateUserRequest>,
) -> Result<Json<CreateUserResponse>> {
    s.authorize(&c, res::USER, verbs::CREATE).await?;
    validate_name(&req.name).map_err(AuthError::BadRequest)?;
    s.check_roles_exist(&req.roles).await?;
    s.authorize_grant(&c, &format!("create user {}", req.name), &req.roles)
        .await?;
    if let Some(bad) = req
        .traits
        .keys()
        .find(|k| !warden_policy::is_internal_trait(k))
    {
        return Err(AuthError::BadRequest(format!(
            "trait {bad:?} cannot be set in Warden: names starting with {:?} hold identity-provider claims",
            warden_policy::EXTERNAL_PREFIX
        )));
    }
    let mut traits = req.traits.clone();
    if !req.logins.is_empty() {
        traits.insert("logins".into(), req.logins.clone());
    }
    // Credentials left by an earlier user of the same name must not let
    // anyone log in as the new one.
    if s.backend()
        .get(&format!("{USERS}{}", req.name))
        .await?
        .is_none()
    {
        s.backend()
            .delete(&format!("{CREDENTIALS}{}", req.name))
            .await?;
    }
    let doc = Document::new(
        kind::USER,
        req.name.clone(),
        UserSpec {
            roles: req.roles.clone(),
            traits,
            created_by: Some(c.identity.username.clone()),
            uid: uuid::Uuid::new_v4().to_string(),
        },
    );
    match s
        .backend()
        .create(
            &format!("{USERS}{}", req.name),
            resources::encode(&doc),
            None,
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::AlreadyExists(_)) => {
            return Err(AuthError::AlreadyExists(format!(
                "user {} already exists; change it with 'warden admin users update'",
                req.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    s.audit(
        AuditEvent::new(
            codes::USER_CREATE,
            s.cluster(),
            &c.identity.username,
            format!("created user {}", req.name),
        )
        .with("target", req.name.clone())
        .with("roles", req.roles.clone())
        .with("logins", req.logins.clone()),
    )
    .await;
    let (token, token_doc) = s
        .new_token(
            TokenKind::Signup,
            Some(req.name.clone()),
            req.token_ttl_secs,
            &c.identity.username,
            NodeTokenOptions::default(),
        )
        .await?;
    Ok(Json(signup_response(doc, token, &token_doc)))
}

async fn update_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<UpdateUserRequest>,
) -> Result<Json<Document<UserSpec>>> {
    s.authorize(&c, res::USER, verbs::UPDATE).await?;
    let key = format!("{USERS}{name}");
    let mut doc: Document<UserSpec> = resources::get(s.backend(), &key)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("user {name} not found")))?;
    // Changing anything of a user (logins feed role templates) takes the
    // right to grant every role they hold now and will hold after.
    let involved: Vec<String> = doc
        .spec
        .roles
        .iter()
        .chain(req.roles.iter().flatten())
        .cloned()
        .collect();
    s.authorize_grant(&c, &format!("update user {name}"), &involved)
        .await?;
    if let Some(roles) = &req.roles {
        s.check_roles_exist(roles).await?;
        doc.spec.roles = roles.clone();
    }
    if let Some(logins) = &req.logins {
        doc.spec.traits.insert("logins".into(), logins.clone());
    }
    let rev = doc.metadata.revision.unwrap_or_default();
    let new_rev = s
        .backend()
        .compare_and_swap(&key, rev, resources::encode(&doc), None)
        .await?;
    doc.metadata.revision = Some(new_rev);
    s.audit(
        AuditEvent::new(
            codes::USER_UPDATE,
            s.cluster(),
            &c.identity.username,
            format!("updated user {name}"),
        )
        .with("target", name)
        .with("roles", doc.spec.roles.clone()),
    )
    .await;
    Ok(Json(doc))
}

async fn delete_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ChangeResponse>> {
    s.authorize(&c, res::USER, verbs::DELETE).await?;
    if let Some(user) = resources::get::<UserSpec>(s.backend(), &format!("{USERS}{name}")).await? {
        s.authorize_grant(&c, &format!("delete user {name}"), &user.spec.roles)
            .await?;
    }
    if !s.backend().delete(&format!("{USERS}{name}")).await? {
        return Err(AuthError::NotFound(format!("user {name} not found")));
    }
    s.backend().delete(&format!("{CREDENTIALS}{name}")).await?;
    s.delete_signup_tokens(&name).await?;
    // Nothing tied to the name outlives the user: their access requests
    // go (pending or approved), and certificates carry the uid, which a
    // new user of this name will not have.
    let cancelled = s.delete_requests_of(&name).await?;
    s.audit(
        AuditEvent::new(
            codes::USER_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("deleted user {name}"),
        )
        .with("target", name.clone())
        .with("requests_cancelled", cancelled),
    )
    .await;
    Ok(Json(ChangeResponse {
        name,
        change: Change::Deleted,
        revision: None,
    }))
}

async fn unlock_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ChangeResponse>> {
    s.authorize(&c, res::USER, verbs::UPDATE).await?;
    // Clearing an account's lockout helps whoever is guessing at it: only
    // for accounts whose roles the caller may grant.
    if let Some(user) = resources::get::<UserSpec>(s.backend(), &format!("{USERS}{name}")).await? {
        s.authorize_grant(&c, &format!("unlock user {name}"), &user.spec.roles)
            .await?;
    }
    s.unlock_user(&name).await?;
    s.audit(
        AuditEvent::new(
            codes::USER_UPDATE,
            s.cluster(),
            &c.identity.username,
            format!("unlocked user {name}"),
        )
        .with("target", name.clone()),
    )
    .await;
    Ok(Json(ChangeResponse {
        name,
        change: Change::Updated,
        revision: None,
    }))
}

#[derive(Deserialize)]
struct ResetBody {
    token_ttl_secs: u64,
}

/// Forgets a user's password and TOTP and issues a new signup token.
async fn reset_user(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Json(body): Json<ResetBody>,
) -> Result<Json<CreateUserResponse>> {
    s.authorize(&c, res::USER, verbs::UPDATE).await?;
    let user: Document<UserSpec> = resources::get(s.backend(), &format!("{USERS}{name}"))
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("user {name} not found")))?;
    // A reset hands the caller a way into the account: only for accounts
    // whose every role the caller may grant.
    s.authorize_grant(&c, &format!("reset user {name}"), &user.spec.roles)
        .await?;
    s.backend().delete(&format!("{CREDENTIALS}{name}")).await?;
    s.delete_signup_tokens(&name).await?;
    s.audit(
        AuditEvent::new(
            codes::USER_UPDATE,
            s.cluster(),
            &c.identity.username,
            format!("reset credentials of user {name}"),
        )
        .with("target", name.clone()),
    )
    .await;
    let (token, token_doc) = s
        .new_token(
            TokenKind::Signup,
            Some(name),
            body.token_ttl_secs,
            &c.identity.username,
            NodeTokenOptions::default(),
        )
        .await?;
    Ok(Json(signup_response(user, token, &token_doc)))
}

async fn list_roles(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<Document<RoleSpec>>>> {
    s.authorize(&c, res::ROLE, verbs::LIST).await?;
    Ok(Json(resources::list(s.backend(), ROLES).await?))
}

async fn get_role(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Document<RoleSpec>>> {
    s.authorize(&c, res::ROLE, verbs::READ).await?;
    resources::get(s.backend(), &format!("{ROLES}{name}"))
        .await?
        .map(Json)
        .ok_or_else(|| AuthError::NotFound(format!("role {name} not found")))
}

/// Two role documents say the same thing (ignoring server-set fields).
fn same_role(a: &Document<RoleSpec>, b: &Document<RoleSpec>) -> bool {
    a.spec == b.spec
        && a.metadata.description == b.metadata.description
        && a.metadata.labels == b.metadata.labels
}

async fn put_role(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Json(mut doc): Json<Document<RoleSpec>>,
) -> Result<Json<ChangeResponse>> {
    if doc.kind != kind::ROLE || doc.version != V1 {
        return Err(AuthError::BadRequest(format!(
            "expected kind: role, version: v1; got kind: {}, version: {}",
            doc.kind, doc.version
        )));
    }
    if doc.name() != name {
        return Err(AuthError::BadRequest(format!(
            "role name {:?} does not match the URL ({name:?})",
            doc.name()
        )));
    }
    validate_name(&name).map_err(AuthError::BadRequest)?;
    warden_policy::validate_role(&doc).map_err(|errs| {
        AuthError::BadRequest(format!("role {name} is invalid: {}", errs.join("; ")))
    })?;
    let key = format!("{ROLES}{name}");
    let existing: Option<Document<RoleSpec>> = resources::get(s.backend(), &key).await?;
    let verb = if existing.is_some() {
        verbs::UPDATE
    } else {
        verbs::CREATE
    };
    s.authorize(&c, res::ROLE, verb).await?;
    // A role's contents decide what every holder may do and grant: writing
    // roles takes the right to grant every role.
    let any = warden_policy::ANY_ROLE.to_string();
    s.authorize_grant(&c, &format!("{verb} role {name}"), [&name, &any])
        .await?;
    doc.metadata.expires = None;
    let (change, revision) = match &existing {
        Some(old) if same_role(old, &doc) => (Change::Unchanged, old.metadata.revision),
        Some(old) => {
            let expected = doc.metadata.revision.or(old.metadata.revision).unwrap_or(0);
            let rev = s
                .backend()
                .compare_and_swap(&key, expected, resources::encode(&doc), None)
                .await?;
            (Change::Updated, Some(rev))
        }
        None => {
            let rev = s
                .backend()
                .create(&key, resources::encode(&doc), None)
                .await?;
            (Change::Created, Some(rev))
        }
    };
    if change != Change::Unchanged {
        let code = if change == Change::Created {
            codes::ROLE_CREATE
        } else {
            codes::ROLE_UPDATE
        };
        s.audit(
            AuditEvent::new(
                code,
                s.cluster(),
                &c.identity.username,
                format!("{change:?} role {name}").to_lowercase(),
            )
            .with("target", name.clone()),
        )
        .await;
    }
    Ok(Json(ChangeResponse {
        name,
        change,
        revision,
    }))
}

async fn delete_role(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ChangeResponse>> {
    s.authorize(&c, res::ROLE, verbs::DELETE).await?;
    let any = warden_policy::ANY_ROLE.to_string();
    s.authorize_grant(&c, &format!("delete role {name}"), [&name, &any])
        .await?;
    let users: Vec<String> = resources::list::<UserSpec>(s.backend(), USERS)
        .await?
        .into_iter()
        .filter(|u| u.spec.roles.contains(&name))
        .map(|u| u.name().to_string())
        .collect();
    if !users.is_empty() {
        return Err(AuthError::Conflict(format!(
            "role {name} is assigned to {}; remove it from them first ('warden admin users update USER --roles ...')",
            users.join(", ")
        )));
    }
    if !s.backend().delete(&format!("{ROLES}{name}")).await? {
        return Err(AuthError::NotFound(format!("role {name} not found")));
    }
    s.audit(
        AuditEvent::new(
            codes::ROLE_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("deleted role {name}"),
        )
        .with("target", name.clone()),
    )
    .await;
    Ok(Json(ChangeResponse {
        name,
        change: Change::Deleted,
        revision: None,
    }))
}

async fn list_tokens(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<TokenSummary>>> {
    s.authorize(&c, res::TOKEN, verbs::LIST).await?;
    let tokens = resources::list::<TokenSpec>(s.backend(), TOKENS).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenSummary {
                id: t.name().to_string(),
                kind: t.spec.kind,
                user: t.spec.user,
                expires: t.metadata.expires.map(|e| e.unix_timestamp()).unwrap_or(0),
                created_by: t.spec.created_by,
            })
            .collect(),
    ))
}

async fn create_token(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateTokenRequest>,
) -> Result<Json<CreateTokenResponse>> {
    s.authorize(&c, res::TOKEN, verbs::CREATE).await?;
    if req.addrs.len() > 16 || req.addrs.iter().any(|a| !valid_host(a.trim())) {
        return Err(AuthError::BadRequest(
            "--addr takes up to 16 host names or IP addresses (no ports)".into(),
        ));
    }
    if req.kind == TokenKind::Signup {
        return Err(AuthError::BadRequest(
            "signup tokens come with 'warden admin users add'".into(),
        ));
    }
    let (token, doc) = s
        .new_token(
            req.kind,
            None,
            req.ttl_secs,
            &c.identity.username,
            NodeTokenOptions {
                addrs: req.addrs.iter().map(|a| a.trim().to_string()).collect(),
                replace: req.replace,
            },
        )
        .await?;
    Ok(Json(CreateTokenResponse {
        id: doc.name().to_string(),
        token: token.into(),
        kind: req.kind,
        expires: doc
            .metadata
            .expires
            .map(|e| e.unix_timestamp())
            .unwrap_or(0),
        ca_pin: s.ca_pin().await?,
    }))
}

async fn delete_token(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ChangeResponse>> {
    s.authorize(&c, res::TOKEN, verbs::DELETE).await?;
    if !s.backend().delete(&format!("{TOKENS}{id}")).await? {
        return Err(AuthError::NotFound(format!(
            "token {id} not found; see 'warden admin tokens ls'"
        )));
    }
    s.audit(
        AuditEvent::new(
            codes::TOKEN_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("deleted token {id}"),
        )
        .with("token_id", id.clone()),
    )
    .await;
    Ok(Json(ChangeResponse {
        name: id,
        change: Change::Deleted,
        revision: None,
    }))
}

async fn audit_events(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditEvents>> {
    s.authorize(&c, res::EVENT, verbs::LIST).await?;
    if let Some(t) = &q.event_type {
        if !codes::EVENT_TYPES.contains(&t.as_str()) {
            return Err(AuthError::BadRequest(format!(
                "unknown event type {t:?}; the types are: {}",
                codes::EVENT_TYPES.join(", ")
            )));
        }
    }
    // A node by name: every node admitted under that name (a replaced
    // node's history included).
    let ids = match &q.node {
        Some(n) if !s.node_known(n).await? => {
            let ids = s.node_ids_named(n).await?;
            if ids.is_empty() {
                return Err(AuthError::NotFound(format!(
                    "no node named or with id {n:?}; 'warden admin nodes ls' lists them"
                )));
            }
            ids
        }
        Some(n) => vec![n.clone()],
        None => vec![],
    };
    let limit = q.limit.unwrap_or(1000).min(10_000) as usize;
    let (mut events, mut total) = (Vec::new(), 0u64);
    let queries: Vec<AuditQuery> = if ids.is_empty() {
        vec![q.clone()]
    } else {
        ids.into_iter()
            .map(|id| AuditQuery {
                node: Some(id),
                ..q.clone()
            })
            .collect()
    };
    for query in &queries {
        let found = s.inner.audit.search(query).await?;
        total += if found.len() >= limit {
            s.inner.audit.count(query).await?
        } else {
            found.len() as u64
        };
        events.extend(found);
    }
    if queries.len() > 1 {
        events.sort_by_key(|e| std::cmp::Reverse((e.time, e.index)));
    }
    events.truncate(limit);
    let total = (total > events.len() as u64).then_some(total);
    Ok(Json(AuditEvents { events, total }))
}
