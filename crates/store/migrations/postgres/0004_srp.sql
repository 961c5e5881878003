-- Cognito SRP (COGNITO-SRP.md). One verifier per user who has a password: its salt and
-- v = g^x mod N, sealed with a key derived from the server secret and bound to the user and
-- to the password hash it was made with (a new password makes an old verifier unopenable).
CREATE TABLE srp_verifiers (
    user_id     UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sealed      BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Challenges (secret blocks) already answered: each may be answered once. Rows are kept until
-- the block expires, then purged.
CREATE TABLE srp_used_challenges (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX srp_used_challenges_expires_at ON srp_used_challenges (expires_at);
