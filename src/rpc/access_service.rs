//! The `Access` service: creating, listing and revoking tokens (admin only, enforced by
//! `access`), and telling a caller who it is.

use super::access::{caller, Caller};
use super::dispatcher_service::unexpected;
use super::error::ApiError;
use super::raft_access::{linearizable, write};
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{Role, TokenHash};
use crate::fsm::{Command, Response as FsmResponse};
use crate::pb::api::access_server::Access;
use crate::pb::api::*;
use tonic::{Request, Response, Status};

pub struct AccessService {
    ctx: ServiceContext,
}

impl AccessService {
    pub fn new(ctx: ServiceContext) -> Self {
        AccessService { ctx }
    }
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    raw.parse::<Role>().map_err(ApiError::InvalidArgument)
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenReply>, Status> {
        let req = request.into_inner();
        crate::fsm::validate_token_name(&req.name).map_err(ApiError::from)?;
        let role = parse_role(&req.role)?;
        let hash: [u8; 32] = req.secret_hash.as_slice().try_into().map_err(|_| {
            ApiError::InvalidArgument(format!(
                "secret_hash is {} bytes; it must be the 32-byte hash of the secret",
                req.secret_hash.len()
            ))
        })?;
        // A token for its own name's tenant goes as `CreateToken`, which older replicas read.
        let tenant = if req.tenant.is_empty() || req.tenant == req.name {
            None
        } else {
            crate::fsm::validate_tenant(&req.tenant).map_err(ApiError::from)?;
            Some(req.tenant)
        };
        let command = match tenant.clone() {
            None => Command::CreateToken {
                name: req.name,
                role,
                hash: TokenHash(hash),
                now_ms: now_ms(),
            },
            Some(tenant) => Command::CreateTenantToken {
                name: req.name,
                role,
                hash: TokenHash(hash),
                tenant,
                now_ms: now_ms(),
            },
        };
        match write(&self.ctx, command).await? {
            FsmResponse::TokenCreated { name } => {
                let tenant = tenant.unwrap_or_else(|| name.clone());
                tracing::info!(token = %name, %role, %tenant, "token created");
                Ok(Response::new(CreateTokenReply {
                    name,
                    role: role.to_string(),
                    tenant,
                }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensReply>, Status> {
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let tokens = applied
            .state
            .tokens
            .iter()
            .map(|(name, token)| TokenInfo {
                name: name.clone(),
                role: token.role.to_string(),
                created_ms: token.created_ms,
                tenant: applied.state.token_tenant(name).to_string(),
            })
            .collect();
        Ok(Response::new(ListTokensReply { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenReply>, Status> {
        let name = request.into_inner().name;
        crate::fsm::validate_token_name(&name).map_err(ApiError::from)?;
        let command = Command::RevokeToken {
            name,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::TokenRevoked { name } => {
                tracing::info!(token = %name, "token revoked");
                Ok(Response::new(RevokeTokenReply { name }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn revoke_certificate(
        &self,
        request: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RevokeCertificateReply>, Status> {
        let req = request.into_inner();
        crate::fsm::validate_name("party", &req.party).map_err(ApiError::from)?;
        if crate::security::Party::parse(&req.party).is_other() {
            return Err(ApiError::InvalidArgument(format!(
                "'{}' is not a party: name replica-<id>, tm-<name> or client-<name>",
                req.party
            ))
            .into());
        }
        let fingerprint = match req.fingerprint {
            None => None,
            Some(bytes) => Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                ApiError::InvalidArgument(format!(
                    "a fingerprint is 32 bytes (BLAKE3 of the certificate), not {}",
                    bytes.len()
                ))
            })?),
        };
        let command = Command::RevokeCertificate {
            party: req.party,
            fingerprint,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::CertificateRevoked { party } => {
                tracing::warn!(%party, whole_party = fingerprint.is_none(), "certificate revoked");
                Ok(Response::new(RevokeCertificateReply { party }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIReply>, Status> {
        let reply = match caller(&request)? {
            Caller::Token { name, role, .. } => WhoAmIReply {
                tenant: self.ctx.shared.read().state.token_tenant(&name).to_string(),
                name,
                role: role.to_string(),
            },
            _ => WhoAmIReply {
                name: String::new(),
                role: Role::Admin.to_string(),
                tenant: crate::domain::DEFAULT_TENANT.to_string(),
            },
        };
        Ok(Response::new(reply))
    }
}
