-- The benchmark's application-like table: word text (a 172-word vocabulary, 20-99 words a row) and
-- JSON payloads with ids, amounts, currencies, tags and dates, so it compresses like application
-- data (about 3:1 with gzip -6), unlike pgbench_accounts' blank-padded rows (about 35:1).
CREATE TABLE documents (
  id bigserial PRIMARY KEY, title text NOT NULL, body text NOT NULL, attrs jsonb NOT NULL);
WITH vocab AS (
  SELECT array_agg(w) AS w, count(*)::int AS n FROM regexp_split_to_table(
    'order customer shipment invoice payment refund delivery warehouse carrier address street city '
    'region country postal code phone email account balance credit debit ledger entry journal '
    'product variant price discount tax total subtotal quantity unit weight volume package parcel '
    'tracking status pending confirmed shipped delivered returned cancelled failed retry queue worker '
    'batch report summary detail note comment review rating feedback support ticket priority urgent '
    'normal low high medium team member manager owner admin user role permission group policy rule '
    'mapping source target field value key index schema table column record row event stream topic '
    'partition offset snapshot backup restore archive retention compliance audit trail signature '
    'the a an of to in for on with by from at as is was be are were this that these those and or but '
    'not no yes new old first last next previous daily weekly monthly yearly morning evening night '
    'january february march april may june july august september october november december monday '
    'tuesday wednesday thursday friday saturday sunday alpha beta gamma delta epsilon zeta eta theta',
    ' ') AS w)
INSERT INTO documents (title, body, attrs)
SELECT initcap(w[1 + (hashint4(i) & 2147483647) % n]) || ' ' || w[1 + (hashint4(i + 7) & 2147483647) % n]
         || ' #' || i,
       array_to_string(ARRAY(
         SELECT w[1 + (hashint8(i::bigint * 1000 + j) & 2147483647) % n]
         FROM generate_series(1, 20 + i % 80) AS j), ' '),
       jsonb_build_object(
         'id', md5(i::text)::uuid,
         'customer', 'cust-' || (hashint4(i * 3) & 65535),
         'amount', round(((hashint4(i * 5) & 1048575) / 100.0)::numeric, 2),
         'currency', (ARRAY['EUR', 'USD', 'GBP', 'JPY', 'CHF'])[1 + i % 5],
         'status', w[1 + (hashint4(i * 11) & 2147483647) % n],
         'tags', jsonb_build_array(w[1 + (hashint4(i * 13) & 2147483647) % n],
                                   w[1 + (hashint4(i * 17) & 2147483647) % n]),
         'created', '2026-01-01T00:00:00Z'::timestamptz + (hashint4(i * 19) & 33554431) * interval '1 second')
FROM generate_series(1, 300000) AS i, vocab;
CREATE INDEX documents_customer ON documents ((attrs->>'customer'));
VACUUM ANALYZE documents;
