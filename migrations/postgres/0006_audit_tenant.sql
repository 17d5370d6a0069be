-- Audit entries carry the tenant whose job or policy they are about, so
-- an auditor of one tenant reads only that tenant's story. Entries written
-- before tenants existed keep the empty tenant (and their hashes).

ALTER TABLE audit ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_by_tenant ON audit (tenant, chain, seq);
