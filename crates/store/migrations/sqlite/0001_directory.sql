-- Latchkey schema, SQLite flavour. Ids are 16-byte UUID blobs, times are milliseconds since
-- the Unix epoch, booleans are 0/1. Every row belongs to a tenant, and every unique rule is
-- scoped to its tenant.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The default tenant (every surface but `projects`) and the tenant of project owners.
INSERT INTO tenants (id, name, created_at) VALUES
    (X'00000000000000000000000000000001', 'default', 0),
    (X'00000000000000000000000000000002', 'project-owners', 0);

CREATE TABLE users (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant_id        BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email            TEXT,
    email_normalized TEXT,
    email_verified   INTEGER NOT NULL DEFAULT 0,
    username         TEXT,
    external_id      TEXT,
    password_hash    TEXT,
    given_name       TEXT,
    family_name      TEXT,
    phone_number     TEXT,
    address          TEXT,
    picture          TEXT,
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email_normalized),
    CONSTRAINT users_tenant_username_key UNIQUE (tenant_id, username),
    CONSTRAINT users_tenant_external_id_key UNIQUE (tenant_id, external_id)
);

CREATE TABLE one_time_codes (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    code_hash   BLOB NOT NULL,
    target      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, purpose)
);
CREATE INDEX one_time_codes_expires_at ON one_time_codes (expires_at);

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id       BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    generation   INTEGER NOT NULL,
    alg          TEXT NOT NULL,
    public_jwk   TEXT NOT NULL,
    private_key  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    CONSTRAINT signing_keys_tenant_generation_key UNIQUE (tenant_id, generation)
);
