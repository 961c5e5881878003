-- Latchkey schema, PostgreSQL flavour. Times are milliseconds since the Unix epoch (BIGINT),
-- as on SQLite, so both backends share one set of queries. Every row belongs to a tenant, and
-- every unique rule is scoped to its tenant.

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- The default tenant (every surface but `projects`) and the tenant of project owners.
INSERT INTO tenants (id, name, created_at) VALUES
    ('00000000-0000-0000-0000-000000000001', 'default', 0),
    ('00000000-0000-0000-0000-000000000002', 'project-owners', 0);

CREATE TABLE users (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email            TEXT,
    email_normalized TEXT,
    email_verified   BOOLEAN NOT NULL DEFAULT FALSE,
    username         TEXT,
    external_id      TEXT,
    password_hash    TEXT,
    given_name       TEXT,
    family_name      TEXT,
    phone_number     TEXT,
    address          TEXT,
    picture          TEXT,
    disabled         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email_normalized),
    CONSTRAINT users_tenant_username_key UNIQUE (tenant_id, username),
    CONSTRAINT users_tenant_external_id_key UNIQUE (tenant_id, external_id)
);

CREATE TABLE one_time_codes (
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    code_hash   BYTEA NOT NULL,
    target      TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, purpose)
);
CREATE INDEX one_time_codes_expires_at ON one_time_codes (expires_at);

CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    rotated_at  BIGINT
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    generation   BIGINT NOT NULL,
    alg          TEXT NOT NULL,
    public_jwk   TEXT NOT NULL,
    private_key  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    CONSTRAINT signing_keys_tenant_generation_key UNIQUE (tenant_id, generation)
);
