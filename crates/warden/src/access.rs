//! `warden admin access check`: explains a decision (a node login, or a
//! request for roles) as auth and the nodes make it, with each role's
//! verdict.

use crate::admin::Admin;
use crate::output::{self, Format};
use warden_types::api::{AccessExplainRequest, AccessExplainResponse};
use warden_types::endpoints;

/// `access check`: prints the decision and each role's verdict; whether
/// access (or the request) is allowed.
pub async fn check(
    admin: &Admin,
    who: &str,
    req: AccessExplainRequest,
    format: Format,
) -> anyhow::Result<bool> {
    let login = req.login.clone();
    let asked = req.request_roles.join(",");
    let r: AccessExplainResponse = admin.api.call(&endpoints::ACCESS_EXPLAIN, &req).await?;
    if format == Format::Json {
        println!("{}", output::json(&r)?);
    }
    if let Some(q) = &r.request {
        if format == Format::Text {
            println!(
                "{}: {who} {} request {asked}: {}",
                if q.allowed { "allowed" } else { "denied" },
                if q.allowed { "may" } else { "may not" },
                output::safe(&q.reason)
            );
            for line in &q.explanation {
                println!("  {}", output::safe(line));
            }
            if q.allowed {
                println!(
                    "a request would need {} approval(s) and grant at most {}",
                    q.approvals_needed,
                    warden_types::duration::HumanDuration::from_secs(q.max_duration_secs)
                );
            }
        }
        return Ok(q.allowed);
    }
    let d = &r.decision;
    if format == Format::Text {
        println!(
            "{}: {who} {} log in as {login} on {} ({}): {}",
            if d.allowed { "allowed" } else { "denied" },
            if d.allowed { "may" } else { "may not" },
            output::safe(&r.node),
            r.node_id,
            output::safe(&d.reason)
        );
        for line in &d.explanation {
            println!("  {}", output::safe(line));
        }
        if !d.roles.is_empty() {
            println!("roles considered: {}", d.roles.join(", "));
        }
    }
    Ok(d.allowed)
}
