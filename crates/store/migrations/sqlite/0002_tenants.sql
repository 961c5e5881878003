-- Tenants become first-class (API.md, `projects`): an owner (the project owner, a user of the
-- owners' tenant, for tenants created by owner sign-up), per-tenant settings, and API keys.
-- The default tenant's verification rule comes from LATCHKEY_REQUIRE_EMAIL_VERIFICATION, not
-- from its row. An owner's tenant belongs to the owner: deleting the owner deletes it, with its
-- keys and accounts.

ALTER TABLE tenants ADD COLUMN owner_id BLOB REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE tenants ADD COLUMN require_email_verification INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX tenants_owner_id_key ON tenants (owner_id);

-- API keys: only the keyed hash (HMAC-SHA256 under the server secret) is stored; `hint` is the
-- key's first characters, for listings.
CREATE TABLE api_keys (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash      BLOB NOT NULL,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id);

-- The operator's paged user listing.
CREATE INDEX users_tenant_created_at ON users (tenant_id, created_at, id);
