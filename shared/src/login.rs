//! `gateway login`: a MiniMax Code account added to the tokens document by
//! the device flow (protocol section 2). It prints where to approve and the
//! code to confirm (never a token), polls as the protocol says, and adds the
//! account (its region, refresh and access tokens) to the tokens file or
//! the tokens secret, keeping everything else there (API keys, tokens,
//! other accounts). The file is replaced atomically, mode 600.
//!
//! The refresh token must not be shared with another client (the desktop
//! app's `auth.json` included): whichever side refreshes first signs the
//! other out. So the gateway logs in on its own, and only its one writer
//! refreshes from then on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::credentials::renewal::{unix_now, CodeLogin};
use crate::credentials::secrets_manager::SecretsManager;
use crate::settings::Lookup;
use crate::upstream::code::oauth::{AccountService, Pkce, Poll};
use crate::upstream::code::CodeConfig;

/// Where the account goes.
#[derive(Debug)]
pub enum Target {
    File(std::path::PathBuf),
    Secret(String),
}

#[derive(Debug)]
pub struct LoginArgs {
    /// `intl` or `cn`; the deployment's `MINIMAX_CODE_REGION` when absent.
    pub region: Option<String>,
    pub target: Target,
}

pub const USAGE: &str = "gateway login [--region intl|cn] (--tokens-file PATH | --secret-id ID)";

impl LoginArgs {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let (mut region, mut target) = (None, None);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value. Usage: {USAGE}"))
            };
            match arg.as_str() {
                "--region" => region = Some(value("--region")?),
                "--tokens-file" => target = Some(Target::File(value("--tokens-file")?.into())),
                "--secret-id" => target = Some(Target::Secret(value("--secret-id")?)),
                other => return Err(format!("unknown argument {other:?}. Usage: {USAGE}")),
            }
        }
        if let Some(r) = &region {
            if crate::upstream::code::config::Region::parse(r).is_none() {
                return Err(format!("--region is intl or cn, not {r:?}"));
            }
        }
        let target = target.ok_or_else(|| {
            format!("say where the account goes (--tokens-file or --secret-id). Usage: {USAGE}")
        })?;
        Ok(Self { region, target })
    }
}

/// The MiniMax Code settings for `region` (the other settings as configured).
fn code_config(region: Option<&str>) -> CodeConfig {
    let get = |key: &str| {
        if key == "MINIMAX_CODE_REGION" {
            if let Some(r) = region {
                return Some(r.to_string());
            }
        }
        std::env::var(key).ok()
    };
    CodeConfig::from_lookup(&Lookup::new(&get))
}

/// Run the device flow and store the account. Messages for the person go
/// to stdout; the error says what went wrong and what to do.
pub async fn run(args: LoginArgs) -> Result<(), String> {
    let code = code_config(args.region.as_deref());
    let service = AccountService::new(&code, Duration::from_secs(30))?;
    let pkce = Pkce::new();
    let start = service.start(&pkce).await?;
    let region = code.region.as_str();
    println!("To add a MiniMax Code account ({region}), open this page in a browser signed in to MiniMax:");
    println!("  {}", start.verification);
    println!("and confirm the code {}", start.user_code);
    println!(
        "Waiting for the approval (the code expires in {} s)...",
        start.expires_in.as_secs()
    );
    let deadline = tokio::time::Instant::now() + start.expires_in;
    let mut interval = start.interval;
    let grant = loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(
                "the code expired before it was approved: run `gateway login` again".into(),
            );
        }
        match service.poll(&start, &pkce).await {
            Poll::Pending => {}
            Poll::SlowDown => interval += Duration::from_secs(5),
            Poll::Expired => {
                return Err(
                    "the code expired before it was approved: run `gateway login` again".into(),
                )
            }
            Poll::Denied => return Err("the approval was refused in the browser".into()),
            Poll::Failed(e) => return Err(format!("the login failed: {e}")),
            Poll::Approved(grant) => break grant,
        }
    };
    let Some(refresh_token) = grant.refresh_token.clone() else {
        return Err(
            "the login was approved but gave no refresh token: the gateway could not renew \
                    the account, so it was not added"
                .into(),
        );
    };
    let now = unix_now();
    let login = CodeLogin {
        region: region.to_string(),
        refresh_token,
        access_token: grant.access_token.clone(),
        expires_at: now + grant.expires_in,
        expires_in: grant.expires_in,
        login_at: now,
    };
    let account = login.account();
    let (where_, total) = match &args.target {
        Target::File(path) => (
            format!("{}", path.display()),
            add_to_file(path, &login).await?,
        ),
        Target::Secret(id) => (format!("the secret {id}"), add_to_secret(id, &login).await?),
    };
    println!(
        "Added the MiniMax Code account {account} ({region}) to {where_}: {total} account(s) there. \
         Its access token lasts {} s; the gateway renews it from now on.",
        grant.expires_in
    );
    Ok(())
}

/// The document with `login` added to its `minimax_code_accounts`; how many
/// accounts it then holds. Everything else in it stays as it was.
fn with_login(mut document: Value, login: &CodeLogin) -> Result<(Value, usize), String> {
    let Some(object) = document.as_object_mut() else {
        return Err("the tokens document is not a JSON object".into());
    };
    let accounts = object
        .entry("minimax_code_accounts")
        .or_insert_with(|| json!([]));
    let Some(list) = accounts.as_array_mut() else {
        return Err("`minimax_code_accounts` in the tokens document is not a list".into());
    };
    list.push(serde_json::to_value(login).map_err(|e| e.to_string())?);
    let total = list.len();
    Ok((document, total))
}

async fn add_to_file(path: &std::path::Path, login: &CodeLogin) -> Result<usize, String> {
    let document = match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not JSON ({e}); nothing was changed", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(format!("{} cannot be read: {e}", path.display())),
    };
    let (document, total) = with_login(document, login)?;
    let body = serde_json::to_vec_pretty(&document).map_err(|e| e.to_string())?;
    crate::credentials::document::write_private(path, &body)
        .await
        .map_err(|e| format!("{} cannot be written: {e}", path.display()))?;
    Ok(total)
}

async fn add_to_secret(id: &str, login: &CodeLogin) -> Result<usize, String> {
    let secrets = SecretsManager::from_env("gateway-login");
    let (document, exists) = match secrets.get_secret_value(id).await {
        Ok(out) => (
            serde_json::from_str(&out.secret_string.unwrap_or_default())
                .map_err(|_| format!("the secret {id} is not JSON; nothing was changed"))?,
            true,
        ),
        Err(e) if e.is_not_found() => (json!({}), false),
        Err(e) => return Err(format!("the secret {id} cannot be read: {e}")),
    };
    let (document, total) = with_login(document, login)?;
    let body = document.to_string();
    let written = if exists {
        secrets.put_secret_value(id, &body).await
    } else {
        secrets
            .create_secret(
                id,
                "The gateway's tokens, API keys and MiniMax Code accounts",
                &body,
            )
            .await
    };
    written.map_err(|e| format!("the secret {id} cannot be written: {e}"))?;
    Ok(total)
}

/// The binary's entry: `gateway [serve]` or `gateway login …`.
pub async fn main_with(args: Vec<String>) -> Result<(), lambda_http::Error> {
    match args.first().map(String::as_str) {
        None | Some("serve") => crate::run_server().await,
        Some("login") => {
            let parsed =
                LoginArgs::parse(&args[1..]).map_err(|e| -> lambda_http::Error { e.into() })?;
            run(parsed).await.map_err(|e| {
                eprintln!("gateway login: {e}");
                e.into()
            })
        }
        Some("--help" | "-h" | "help") => {
            println!("gateway [serve]    serve every route (the default)\n{USAGE}");
            Ok(())
        }
        Some(other) => {
            Err(format!("unknown command {other:?}: `gateway serve` or `{USAGE}`").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn arguments() {
        let a = LoginArgs::parse(&args("--region cn --tokens-file /t.json")).unwrap();
        assert_eq!(a.region.as_deref(), Some("cn"));
        assert!(matches!(a.target, Target::File(p) if p.to_str() == Some("/t.json")));
        assert!(matches!(
            LoginArgs::parse(&args("--secret-id gw/tokens")).unwrap().target,
            Target::Secret(id) if id == "gw/tokens"
        ));
        assert!(LoginArgs::parse(&args("--region mars --tokens-file x")).is_err());
        assert!(LoginArgs::parse(&args(""))
            .unwrap_err()
            .contains("--tokens-file"));
        assert!(LoginArgs::parse(&args("--tokens-file")).is_err());
    }

    #[test]
    fn a_login_is_added_and_the_rest_kept() {
        let login = CodeLogin {
            region: "intl".into(),
            refresh_token: "mmort_x".into(),
            ..CodeLogin::default()
        };
        let doc = json!({"api_keys": ["sk-1"], "tokens": ["t"], "minimax_code_accounts": [{"refresh_token": "mmort_old"}]});
        let (doc, total) = with_login(doc, &login).unwrap();
        assert_eq!(total, 2);
        assert_eq!(doc["api_keys"], json!(["sk-1"]));
        assert_eq!(doc["minimax_code_accounts"][1]["refresh_token"], "mmort_x");
        assert!(with_login(json!([]), &login).is_err());
        assert!(with_login(json!({"minimax_code_accounts": 3}), &login).is_err());
    }
}
