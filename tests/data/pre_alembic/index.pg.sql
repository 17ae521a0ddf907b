--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: api_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_tokens (
    token_sha256 character varying(64) NOT NULL,
    name character varying(128) NOT NULL,
    role character varying(16) NOT NULL,
    ins character varying(15) NOT NULL,
    issued_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone
);


--
-- Name: audit_head; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_head (
    id integer NOT NULL,
    seq bigint NOT NULL,
    hash character varying(64) NOT NULL
);


--
-- Name: audit_trail; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_trail (
    seq bigint NOT NULL,
    key character varying(256),
    at timestamp with time zone NOT NULL,
    ins character varying(64) NOT NULL,
    actor_kind character varying(32) NOT NULL,
    actor_id character varying(256) NOT NULL,
    action character varying(64) NOT NULL,
    target character varying(300) NOT NULL,
    outcome character varying(16) NOT NULL,
    detail text,
    redacted boolean NOT NULL,
    body_sha256 character varying(64) NOT NULL,
    prev_hash character varying(64) NOT NULL,
    entry_hash character varying(64) NOT NULL
);


--
-- Name: blob_erasures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.blob_erasures (
    bucket character varying(128) NOT NULL,
    blob_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL,
    queued_at timestamp with time zone NOT NULL
);


--
-- Name: blocked_professionals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.blocked_professionals (
    ins character varying(15) NOT NULL,
    idnps character varying(32) NOT NULL
);


--
-- Name: deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.deliveries (
    submission_id character varying(64) NOT NULL,
    recipient character varying(320) NOT NULL,
    route character varying(16) NOT NULL,
    state character varying(16) NOT NULL,
    attempts integer NOT NULL,
    last_reply text NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: document_controls; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.document_controls (
    document_id character varying(256) NOT NULL,
    ins character varying(15) NOT NULL,
    masked_by_patient boolean NOT NULL,
    hidden_from_representatives boolean NOT NULL,
    invisible_lifted boolean NOT NULL,
    deleted_at timestamp with time zone,
    deleted_by character varying(64) NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    updated_by character varying(64) NOT NULL
);


--
-- Name: document_links; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.document_links (
    parent_id character varying(256) NOT NULL,
    child_id character varying(256) NOT NULL
);


--
-- Name: documents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.documents (
    document_id character varying(256) NOT NULL,
    patient_ins character varying(15) NOT NULL,
    submission_id character varying(64) NOT NULL,
    blob_bucket character varying(128) NOT NULL,
    blob_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL,
    type_code character varying(256) NOT NULL,
    class_code character varying(256) NOT NULL,
    category character varying(256) NOT NULL,
    format_code character varying(256) NOT NULL,
    level character varying(256) NOT NULL,
    effective_time character varying(256) NOT NULL,
    service_date character varying(256) NOT NULL,
    type_label text NOT NULL,
    title text NOT NULL,
    confidentiality text NOT NULL,
    author_id character varying(256),
    custodian_id character varying(256),
    replaces text NOT NULL,
    replaced_by character varying(256),
    status character varying(16) NOT NULL,
    indexed_at timestamp with time zone NOT NULL
);


--
-- Name: insurer_documents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.insurer_documents (
    document_key character varying(256) NOT NULL,
    ins character varying(15) NOT NULL,
    blob_bucket character varying(128) NOT NULL,
    blob_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    filed_submission character varying(64),
    release_after timestamp with time zone
);


--
-- Name: legal_representatives; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.legal_representatives (
    ins character varying(15) NOT NULL,
    representative_ins character varying(15) NOT NULL
);


--
-- Name: letter_batches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.letter_batches (
    batch_id character varying(64) NOT NULL,
    period character varying(16) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    letters integer NOT NULL,
    bucket character varying(128) NOT NULL,
    pdf_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL
);


--
-- Name: mail_filing_documents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mail_filing_documents (
    submission_id character varying(64) NOT NULL,
    message_id character varying(64) NOT NULL,
    "position" integer NOT NULL,
    entry text NOT NULL
);


--
-- Name: mail_filings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mail_filings (
    message_id character varying(64) NOT NULL,
    mail_submission_id character varying(64) NOT NULL,
    mailbox character varying(320) NOT NULL,
    received_at timestamp with time zone NOT NULL,
    findings text NOT NULL,
    report_by character varying(64),
    reported_at timestamp with time zone
);


--
-- Name: messages; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.messages (
    message_id character varying(64) NOT NULL,
    mailbox character varying(320) NOT NULL,
    submission_id character varying(64) NOT NULL,
    direction character varying(8) NOT NULL,
    correspondent character varying(320) NOT NULL,
    subject text NOT NULL,
    rfc_message_id text NOT NULL,
    in_reply_to text NOT NULL,
    blob_bucket character varying(128) NOT NULL,
    blob_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    closed boolean NOT NULL,
    read_at timestamp with time zone,
    attachments text NOT NULL,
    documents text NOT NULL
);


--
-- Name: notices; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notices (
    seq integer NOT NULL,
    notice_id character varying(40) NOT NULL,
    event_id character varying(300) NOT NULL,
    kind character varying(32) NOT NULL,
    ins character varying(15) NOT NULL,
    about_ins character varying(15) NOT NULL,
    channel character varying(16) NOT NULL,
    address text NOT NULL,
    state character varying(16) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL,
    lease_until timestamp with time zone,
    sent_at timestamp with time zone,
    read_at timestamp with time zone,
    batch_id character varying(64) NOT NULL,
    provider_ref character varying(256) NOT NULL,
    last_error text NOT NULL,
    fallback_of character varying(40) NOT NULL,
    code character varying(64) NOT NULL,
    code_expires timestamp with time zone
);


--
-- Name: notices_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.notices ALTER COLUMN seq ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.notices_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: notification_contacts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notification_contacts (
    ins character varying(15) NOT NULL,
    email text NOT NULL,
    phone character varying(32) NOT NULL,
    pending_email text NOT NULL,
    pending_phone character varying(32) NOT NULL,
    pending_sha256 character varying(64) NOT NULL,
    pending_expires timestamp with time zone,
    pending_attempts integer NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: notification_preferences; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notification_preferences (
    ins character varying(15) NOT NULL,
    choices text NOT NULL
);


--
-- Name: patient_access_settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.patient_access_settings (
    ins character varying(15) NOT NULL,
    bris_de_glace_allowed boolean NOT NULL,
    regulation_allowed boolean NOT NULL
);


--
-- Name: patients; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.patients (
    ins character varying(15) NOT NULL,
    oid character varying(64) NOT NULL,
    birth_name text NOT NULL,
    given_names text NOT NULL,
    birth_date text NOT NULL,
    sex text NOT NULL,
    birth_place text NOT NULL,
    email text NOT NULL,
    phone text NOT NULL,
    postal_address text NOT NULL,
    status character varying(16) NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: professional_access; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.professional_access (
    ins character varying(15) NOT NULL,
    idnps character varying(32) NOT NULL,
    first_at timestamp with time zone NOT NULL
);


--
-- Name: profiles; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.profiles (
    ins character varying(15) NOT NULL,
    status character varying(16) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    code_expires_at timestamp with time zone,
    activated_at timestamp with time zone,
    activation character varying(16) NOT NULL,
    opposed_at timestamp with time zone,
    closed_at timestamp with time zone,
    purge_after timestamp with time zone,
    purged_at timestamp with time zone,
    failed_attempts integer NOT NULL,
    locked_until timestamp with time zone,
    receipt_key character varying(256) NOT NULL,
    receipt_bucket character varying(128) NOT NULL,
    receipt_sha256 character varying(64) NOT NULL,
    receipt_size bigint NOT NULL,
    code_generation integer NOT NULL,
    announced_generation integer NOT NULL,
    code_sha256 character varying(64) NOT NULL,
    vitale_sha256 character varying(64) NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: push_devices; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.push_devices (
    ins character varying(15) NOT NULL,
    endpoint character varying(1000) NOT NULL,
    added_at timestamp with time zone NOT NULL
);


--
-- Name: reimbursed_acts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.reimbursed_acts (
    act_ref character varying(64) NOT NULL,
    ins character varying(15) NOT NULL,
    batch_id character varying(64) NOT NULL,
    fields text NOT NULL,
    received_at timestamp with time zone NOT NULL,
    filed_submission character varying(64),
    release_after timestamp with time zone
);


--
-- Name: submissions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.submissions (
    submission_id character varying(64) NOT NULL,
    received_at timestamp with time zone NOT NULL,
    producer character varying(128) NOT NULL,
    source_kind character varying(32) NOT NULL,
    status character varying(16) NOT NULL,
    document_id character varying(256),
    category character varying(32),
    findings text NOT NULL,
    blob_key character varying(256) NOT NULL,
    sha256 character varying(64) NOT NULL,
    size bigint NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    confidentiality text DEFAULT '[]'::text NOT NULL
);


--
-- Data for Name: api_tokens; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.api_tokens VALUES ('279035121518989fffffffffffffffffffffffffffffffffffffffffffffffff', 'patient-2790', 'patient', '279035121518989', '2026-12-03 13:00:14.886233+00', NULL);
INSERT INTO public.api_tokens VALUES ('185077512345678fffffffffffffffffffffffffffffffffffffffffffffffff', 'patient-1850', 'patient', '185077512345678', '2026-12-03 13:00:14.88913+00', NULL);


--
-- Data for Name: audit_head; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.audit_head VALUES (1, 3, '6acf9411357478a87b6049e4c87bcc3acaa53a7408e9f8dd45d53af3d501857e');


--
-- Data for Name: audit_trail; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.audit_trail VALUES (1, 'k-2790-0', '2026-12-02 12:00:00+00', '279035121518989', 'professional', '810000000001', 'read', '1.2.3^279035121518989-a', 'ok', '{"mode":"normal","note":"é"}', false, '1b04f74930462aa4dbd8d614e0685846abbafd0e2bfe4b12ec3c3b16eb67886e', '0000000000000000000000000000000000000000000000000000000000000000', '458992944bc8512342d16a741f47720037b8637707f4aa62e7ed268797170603');
INSERT INTO public.audit_trail VALUES (2, 'k-2790-1', '2026-12-02 12:00:01+00', '279035121518989', 'professional', '810000000001', 'write', '1.2.3^279035121518989-a', 'ok', '{"mode":"normal","note":"é"}', false, '3240caa463996efcc0c735a9a5ed50100d52c6e08419b115dbd5ef93fec6898c', '458992944bc8512342d16a741f47720037b8637707f4aa62e7ed268797170603', '43b2f6d21546eec7759ce28e7c86efc4130641ec712865fafff52fdcc0b0fa33');
INSERT INTO public.audit_trail VALUES (3, 'k-1850-2', '2026-12-02 12:00:02+00', '185077512345678', 'professional', '810000000001', 'read', '1.2.3^185077512345678-a', 'ok', '{"mode":"normal","note":"é"}', false, '276cf4439ce28d71e9bef95b0d80f66ca464584fd0760d54c952799b69ae3981', '43b2f6d21546eec7759ce28e7c86efc4130641ec712865fafff52fdcc0b0fa33', '6acf9411357478a87b6049e4c87bcc3acaa53a7408e9f8dd45d53af3d501857e');


--
-- Data for Name: blob_erasures; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.blob_erasures VALUES ('meshub', 'cda/72/7261772d3138353037373531323334353637382d300000000000000000000000', '7261772d3138353037373531323334353637382d300000000000000000000000', 121, '2026-12-03 13:00:14.934771+00');
INSERT INTO public.blob_erasures VALUES ('meshub', 'cda/72/7261772d3138353037373531323334353637382d310000000000000000000000', '7261772d3138353037373531323334353637382d310000000000000000000000', 121, '2026-12-03 13:00:14.934771+00');
INSERT INTO public.blob_erasures VALUES ('meshub', 'msg/6d/6d73672d3138353037373531323334353637382d300000000000000000000000', '6d73672d3138353037373531323334353637382d300000000000000000000000', 121, '2026-12-03 13:00:14.934771+00');
INSERT INTO public.blob_erasures VALUES ('meshub', 'msg/6d/6d73672d3138353037373531323334353637382d310000000000000000000000', '6d73672d3138353037373531323334353637382d310000000000000000000000', 121, '2026-12-03 13:00:14.934771+00');
INSERT INTO public.blob_erasures VALUES ('meshub', 'cda/68/68656c642d313835303737353132333435363738000000000000000000000000', '68656c642d313835303737353132333435363738000000000000000000000000', 120, '2026-12-03 13:00:14.934771+00');
INSERT INTO public.blob_erasures VALUES ('meshub', 'r/72/7265636569707400000000000000000000000000000000000000000000000000', 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 5, '2026-12-03 13:00:14.934771+00');


--
-- Data for Name: blocked_professionals; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.blocked_professionals VALUES ('279035121518989', '810000000002');


--
-- Data for Name: deliveries; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.deliveries VALUES ('mail-2790-0', 'dr0@hopital.mssante.fr', 'relay', 'queued', 1, '250 2.0.0 ok', '2026-12-03 13:00:14.737074+00');
INSERT INTO public.deliveries VALUES ('mail-2790-1', 'dr1@hopital.mssante.fr', 'relay', 'delivered', 2, '250 2.0.0 ok', '2026-12-03 13:00:14.741407+00');


--
-- Data for Name: document_controls; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.document_controls VALUES ('1.2.3^279035121518989-b', '279035121518989', true, false, false, NULL, '', '2026-12-02 12:00:00+00', '279035121518989');
INSERT INTO public.document_controls VALUES ('1.2.3^279035121518989-a', '279035121518989', false, false, false, '2026-12-02 12:00:00+00', '810000000001', '2026-12-02 12:00:00+00', '810000000001');


--
-- Data for Name: document_links; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.document_links VALUES ('1.2.3^279035121518989-a', '1.2.3^279035121518989-b');


--
-- Data for Name: documents; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.documents VALUES ('1.2.3^279035121518989-b', '279035121518989', 'sub-2790-1', 'meshub', 'cda/72/7261772d3237393033353132313531383938392d310000000000000000000000', '7261772d3237393033353132313531383938392d310000000000000000000000', 121, '11502-2', '10', 'BIOLOGIE', 'urn:ihe:lab:xd-lab:2008', 'N3', '20240105120000+0100', '2024-02-01', 'CR d''examens biologiques', 'CR 1.2.3^279035121518989-b', '["N"]', NULL, NULL, '["1.2.3^279035121518989-a"]', NULL, 'current', '2026-12-03 13:00:14.700222+00');
INSERT INTO public.documents VALUES ('1.2.3^279035121518989-a', '279035121518989', 'sub-2790-0', 'meshub', 'cda/72/7261772d3237393033353132313531383938392d300000000000000000000000', '7261772d3237393033353132313531383938392d300000000000000000000000', 121, '11502-2', '10', 'BIOLOGIE', 'urn:ihe:lab:xd-lab:2008', 'N3', '20240105120000+0100', '2024-01-05', 'CR d''examens biologiques', 'CR 1.2.3^279035121518989-a', '["N"]', NULL, NULL, '[]', '1.2.3^279035121518989-b', 'deprecated', '2026-12-03 13:00:14.688717+00');


--
-- Data for Name: insurer_documents; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.insurer_documents VALUES ('1.2.250.1^279035121518989', '279035121518989', 'meshub', 'cda/68/68656c642d323739303335313231353138393839000000000000000000000000', '68656c642d323739303335313231353138393839000000000000000000000000', 120, '2026-12-02 12:00:00+00', NULL, '2026-12-03 12:00:00+00');


--
-- Data for Name: legal_representatives; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.legal_representatives VALUES ('210017512345619', '279035121518989');


--
-- Data for Name: letter_batches; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.letter_batches VALUES ('b-2790', '2026-12', '2026-12-02 12:00:00+00', 1, 'meshub', 'letters/6c/6c6574746572732d323739303335313231353138393839000000000000000000', '0000000000000000000000000000000000000000000000000000000000000000', 10);
INSERT INTO public.letter_batches VALUES ('b-1850', '2026-12', '2026-12-02 12:00:00+00', 1, 'meshub', 'letters/6c/6c6574746572732d313835303737353132333435363738000000000000000000', '0000000000000000000000000000000000000000000000000000000000000000', 10);


--
-- Data for Name: mail_filing_documents; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.mail_filing_documents VALUES ('sub-2790-0', 'msg-2790-0', 0, 'SUBSET01#Document01');
INSERT INTO public.mail_filing_documents VALUES ('sub-2790-1', 'msg-2790-0', 1, 'SUBSET01#Document02');


--
-- Data for Name: mail_filings; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.mail_filings VALUES ('msg-2790-0', 'mail-2790-0', '279035121518989@patient.mssante.fr', '2026-12-02 12:00:00+00', '[{"rule": "mss.xdm.other-patient", "location": "SUBSET01#Document03"}]', 'sub-2790-0', '2026-12-03 13:00:14.746992+00');


--
-- Data for Name: messages; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.messages VALUES ('msg-2790-0', '279035121518989@patient.mssante.fr', 'mail-2790-0', 'in', 'dr.house@hopital.mssante.fr', 'Compte rendu 0', '<0.279035121518989@hopital>', '', 'meshub', 'msg/6d/6d73672d3237393033353132313531383938392d300000000000000000000000', '6d73672d3237393033353132313531383938392d300000000000000000000000', 121, '2026-12-02 12:00:00+00', false, NULL, '["IHE_XDM.ZIP"]', '["1.2.3^279035121518989-a"]');
INSERT INTO public.messages VALUES ('msg-2790-1', '279035121518989@patient.mssante.fr', 'mail-2790-1', 'in', 'dr.house@hopital.mssante.fr', 'Compte rendu 1', '<1.279035121518989@hopital>', '', 'meshub', 'msg/6d/6d73672d3237393033353132313531383938392d310000000000000000000000', '6d73672d3237393033353132313531383938392d310000000000000000000000', 121, '2026-12-02 13:00:00+00', true, NULL, '["IHE_XDM.ZIP"]', '["1.2.3^279035121518989-a"]');


--
-- Data for Name: notices; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.notices VALUES (2, 'n-2790-inapp', 'document:1.2.3^279035121518989-a', 'new_document', '279035121518989', '279035121518989', 'inapp', '', 'queued', '2026-12-02 12:00:00+00', '2026-12-02 12:05:00+00', 0, NULL, NULL, NULL, '', '', '', '', '', NULL);
INSERT INTO public.notices VALUES (1, 'n-2790-email', 'document:1.2.3^279035121518989-a', 'new_document', '279035121518989', '279035121518989', 'email', '2790@example.org', 'sent', '2026-12-02 12:00:00+00', '2026-12-02 12:05:00+00', 0, NULL, '2026-12-02 12:00:00+00', NULL, '', 'ref-2790', '', '', '', NULL);
INSERT INTO public.notices VALUES (3, 'n-2790-postal', 'document:1.2.3^279035121518989-a', 'new_document', '279035121518989', '279035121518989', 'postal', '', 'sent', '2026-12-02 12:00:00+00', '2026-12-02 12:05:00+00', 0, NULL, '2026-12-02 12:00:00+00', NULL, 'b-2790', '', '', '', '', NULL);


--
-- Data for Name: notification_contacts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.notification_contacts VALUES ('185077512345678', 'own-1850@example.org', '+33611111111', '', '', '', NULL, 0, '2026-12-03 13:00:14.79407+00');
INSERT INTO public.notification_contacts VALUES ('279035121518989', 'own-2790@example.org', '+33611111111', 'new@example.org', '', 'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd', '2026-12-02 13:00:00+00', 0, '2026-12-03 13:00:14.801744+00');


--
-- Data for Name: notification_preferences; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.notification_preferences VALUES ('279035121518989', '{"email": true, "push": false, "digest": false, "quiet_hours": "", "timezone": "Europe/Paris"}');


--
-- Data for Name: patient_access_settings; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.patient_access_settings VALUES ('279035121518989', false, true);


--
-- Data for Name: patients; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.patients VALUES ('210017512345619', '1.2.250.1.213.1.4.10', 'TEST', 'Lou', '2010-01-01', 'F', '51215', 'lou@example.org', '+33600000000', '1 rue de Test, 75000 Paris', 'created', '2026-12-02 12:00:00+00');
INSERT INTO public.patients VALUES ('279035121518989', '1.2.250.1.213.1.4.10', 'TEST', 'Jeanne', '1979-03-01', 'F', '51215', 'jeanne@example.org', '+33600000000', '1 rue de Test, 75000 Paris', 'active', '2026-12-03 13:00:14.853353+00');
INSERT INTO public.patients VALUES ('185077512345678', '1.2.250.1.213.1.4.10', '', '', '', '', '', '', '', '', 'closed', '2026-12-03 13:00:14.928509+00');


--
-- Data for Name: professional_access; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.professional_access VALUES ('279035121518989', '810000000001', '2026-12-02 12:00:00+00');


--
-- Data for Name: profiles; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.profiles VALUES ('210017512345619', 'created', '2026-12-02 12:00:00+00', '2027-01-13 12:00:00+00', NULL, '', NULL, NULL, NULL, NULL, 0, NULL, '', '', '', 0, 1, 0, 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv', '2026-12-02 12:00:00+00');
INSERT INTO public.profiles VALUES ('279035121518989', 'active', '2026-12-02 12:00:00+00', '2027-01-13 12:00:00+00', '2026-12-02 12:00:00+00', 'code', NULL, NULL, NULL, NULL, 0, NULL, '', '', '', 0, 1, 0, '', 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv', '2026-12-03 13:00:14.853353+00');
INSERT INTO public.profiles VALUES ('185077512345678', 'closed', '2026-12-02 12:00:00+00', '2027-01-13 12:00:00+00', NULL, '', NULL, '2026-12-02 12:00:00+00', '2026-12-02 12:00:00+00', '2026-12-02 12:00:00+00', 0, NULL, '', '', '', 0, 1, 0, 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc', 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv', '2026-12-02 12:00:00+00');


--
-- Data for Name: push_devices; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.push_devices VALUES ('279035121518989', 'https://push.example.org/2790', '2026-12-03 13:00:14.776159+00');


--
-- Data for Name: reimbursed_acts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.reimbursed_acts VALUES ('act-2790-1', '279035121518989', 'batch-2790', '{"act_ref": "act-2790-1", "ins": "279035121518989", "ins_oid": "1.2.250.1.213.1.4.10", "care_date": "2026-11-20", "kind": "NGAP", "code": "G", "label": "CONSULTATION", "quantity": 1, "paid_cents": 3000, "reimbursed_cents": 2100, "prescriber": "", "executant": ""}', '2026-12-02 12:00:00+00', NULL, NULL);
INSERT INTO public.reimbursed_acts VALUES ('act-2790-0', '279035121518989', 'batch-2790', '{"act_ref": "act-2790-0", "ins": "279035121518989", "ins_oid": "1.2.250.1.213.1.4.10", "care_date": "2026-11-20", "kind": "NGAP", "code": "G", "label": "CONSULTATION", "quantity": 1, "paid_cents": 3000, "reimbursed_cents": 2100, "prescriber": "", "executant": ""}', '2026-12-02 12:00:00+00', 'sub-2790-0', NULL);


--
-- Data for Name: submissions; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.submissions VALUES ('sub-2790-3', '2026-12-02 12:03:00+00', 'lab-1', 'http', 'pending', NULL, NULL, '[]', 'cda/72/7261772d3237393033353132313531383938392d330000000000000000000000', '7261772d3237393033353132313531383938392d330000000000000000000000', 121, '2026-12-03 13:00:14.685653+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-2790-0', '2026-12-02 12:00:00+00', 'lab-1', 'http', 'indexed', '1.2.3^279035121518989-a', 'BIOLOGIE', '[]', 'cda/72/7261772d3237393033353132313531383938392d300000000000000000000000', '7261772d3237393033353132313531383938392d300000000000000000000000', 121, '2026-12-03 13:00:14.694639+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-2790-1', '2026-12-02 12:01:00+00', 'lab-1', 'http', 'indexed', '1.2.3^279035121518989-b', 'BIOLOGIE', '[]', 'cda/72/7261772d3237393033353132313531383938392d310000000000000000000000', '7261772d3237393033353132313531383938392d310000000000000000000000', 121, '2026-12-03 13:00:14.705079+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-2790-2', '2026-12-02 12:02:00+00', 'lab-1', 'http', 'rejected', NULL, NULL, '[{"rule": "cda.schema", "location": "/ClinicalDocument", "severity": "error"}]', 'cda/72/7261772d3237393033353132313531383938392d320000000000000000000000', '7261772d3237393033353132313531383938392d320000000000000000000000', 121, '2026-12-03 13:00:14.707118+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-1850-3', '2026-12-02 12:03:00+00', 'lab-1', 'http', 'pending', NULL, NULL, '[]', 'cda/72/7261772d3138353037373531323334353637382d330000000000000000000000', '7261772d3138353037373531323334353637382d330000000000000000000000', 121, '2026-12-03 13:00:14.714393+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-1850-2', '2026-12-02 12:02:00+00', 'lab-1', 'http', 'rejected', NULL, NULL, '[{"rule": "cda.schema", "location": "/ClinicalDocument", "severity": "error"}]', 'cda/72/7261772d3138353037373531323334353637382d320000000000000000000000', '7261772d3138353037373531323334353637382d320000000000000000000000', 121, '2026-12-03 13:00:14.724778+00', '["N"]');
INSERT INTO public.submissions VALUES ('sub-2790-9', '2026-12-02 12:09:00+00', 'lab-1', 'http', 'duplicate', '1.2.3^279035121518989-a', 'BIOLOGIE', '[{"rule": "document.duplicate", "location": "/ClinicalDocument/id", "severity": "warning", "code": null, "message_fr": "Ce document (m\u00eame id) a d\u00e9j\u00e0 \u00e9t\u00e9 index\u00e9 par la soumission sub-2790-0; rien n''a \u00e9t\u00e9 modifi\u00e9. Pour le remplacer, envoyez une nouvelle version avec relatedDocument RPLC.", "message_en": "A document with the same id was already indexed by submission sub-2790-0; nothing was changed. To replace it, send a new version with a relatedDocument of typeCode RPLC."}]', 'cda/72/7261772d3237393033353132313531383938392d390000000000000000000000', '7261772d3237393033353132313531383938392d390000000000000000000000', 121, '2026-12-03 13:00:14.728237+00', '["N"]');


--
-- Name: notices_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.notices_seq_seq', 6, true);


--
-- Name: api_tokens api_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (token_sha256);


--
-- Name: audit_head audit_head_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_head
    ADD CONSTRAINT audit_head_pkey PRIMARY KEY (id);


--
-- Name: audit_trail audit_trail_key_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_trail
    ADD CONSTRAINT audit_trail_key_key UNIQUE (key);


--
-- Name: audit_trail audit_trail_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_trail
    ADD CONSTRAINT audit_trail_pkey PRIMARY KEY (seq);


--
-- Name: blob_erasures blob_erasures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.blob_erasures
    ADD CONSTRAINT blob_erasures_pkey PRIMARY KEY (bucket, blob_key);


--
-- Name: blocked_professionals blocked_professionals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.blocked_professionals
    ADD CONSTRAINT blocked_professionals_pkey PRIMARY KEY (ins, idnps);


--
-- Name: deliveries deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (submission_id, recipient);


--
-- Name: document_controls document_controls_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.document_controls
    ADD CONSTRAINT document_controls_pkey PRIMARY KEY (document_id);


--
-- Name: document_links document_links_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.document_links
    ADD CONSTRAINT document_links_pkey PRIMARY KEY (parent_id, child_id);


--
-- Name: documents documents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (document_id);


--
-- Name: insurer_documents insurer_documents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.insurer_documents
    ADD CONSTRAINT insurer_documents_pkey PRIMARY KEY (document_key);


--
-- Name: legal_representatives legal_representatives_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.legal_representatives
    ADD CONSTRAINT legal_representatives_pkey PRIMARY KEY (ins, representative_ins);


--
-- Name: letter_batches letter_batches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.letter_batches
    ADD CONSTRAINT letter_batches_pkey PRIMARY KEY (batch_id);


--
-- Name: mail_filing_documents mail_filing_documents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mail_filing_documents
    ADD CONSTRAINT mail_filing_documents_pkey PRIMARY KEY (submission_id);


--
-- Name: mail_filings mail_filings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mail_filings
    ADD CONSTRAINT mail_filings_pkey PRIMARY KEY (message_id);


--
-- Name: messages messages_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_pkey PRIMARY KEY (message_id);


--
-- Name: notices notices_notice_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notices
    ADD CONSTRAINT notices_notice_id_key UNIQUE (notice_id);


--
-- Name: notices notices_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notices
    ADD CONSTRAINT notices_pkey PRIMARY KEY (seq);


--
-- Name: notification_contacts notification_contacts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_contacts
    ADD CONSTRAINT notification_contacts_pkey PRIMARY KEY (ins);


--
-- Name: notification_preferences notification_preferences_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_preferences
    ADD CONSTRAINT notification_preferences_pkey PRIMARY KEY (ins);


--
-- Name: patient_access_settings patient_access_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.patient_access_settings
    ADD CONSTRAINT patient_access_settings_pkey PRIMARY KEY (ins);


--
-- Name: patients patients_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.patients
    ADD CONSTRAINT patients_pkey PRIMARY KEY (ins);


--
-- Name: professional_access professional_access_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.professional_access
    ADD CONSTRAINT professional_access_pkey PRIMARY KEY (ins, idnps);


--
-- Name: profiles profiles_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.profiles
    ADD CONSTRAINT profiles_pkey PRIMARY KEY (ins);


--
-- Name: push_devices push_devices_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.push_devices
    ADD CONSTRAINT push_devices_pkey PRIMARY KEY (ins, endpoint);


--
-- Name: reimbursed_acts reimbursed_acts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.reimbursed_acts
    ADD CONSTRAINT reimbursed_acts_pkey PRIMARY KEY (act_ref);


--
-- Name: submissions submissions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.submissions
    ADD CONSTRAINT submissions_pkey PRIMARY KEY (submission_id);


--
-- Name: messages uq_messages_copy; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT uq_messages_copy UNIQUE (submission_id, mailbox);


--
-- Name: ix_api_tokens_ins; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_api_tokens_ins ON public.api_tokens USING btree (ins);


--
-- Name: ix_audit_trail_ins; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_audit_trail_ins ON public.audit_trail USING btree (ins, seq);


--
-- Name: ix_document_controls_ins; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_document_controls_ins ON public.document_controls USING btree (ins);


--
-- Name: ix_documents_patient; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_documents_patient ON public.documents USING btree (patient_ins, service_date);


--
-- Name: ix_insurer_documents_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_insurer_documents_due ON public.insurer_documents USING btree (filed_submission, release_after);


--
-- Name: ix_insurer_documents_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_insurer_documents_pending ON public.insurer_documents USING btree (filed_submission, ins);


--
-- Name: ix_mail_filing_documents_message_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_mail_filing_documents_message_id ON public.mail_filing_documents USING btree (message_id);


--
-- Name: ix_messages_mailbox; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_messages_mailbox ON public.messages USING btree (mailbox, received_at);


--
-- Name: ix_notices_ins; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_notices_ins ON public.notices USING btree (ins, seq);


--
-- Name: ix_notices_provider; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_notices_provider ON public.notices USING btree (provider_ref);


--
-- Name: ix_notices_queue; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_notices_queue ON public.notices USING btree (state, channel, due_at);


--
-- Name: ix_profiles_code_expiry; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_profiles_code_expiry ON public.profiles USING btree (status, code_expires_at);


--
-- Name: ix_profiles_purge; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_profiles_purge ON public.profiles USING btree (status, purge_after);


--
-- Name: ix_reimbursed_acts_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_reimbursed_acts_due ON public.reimbursed_acts USING btree (filed_submission, release_after);


--
-- Name: ix_reimbursed_acts_ins; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_reimbursed_acts_ins ON public.reimbursed_acts USING btree (ins, received_at);


--
-- Name: ix_reimbursed_acts_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_reimbursed_acts_pending ON public.reimbursed_acts USING btree (filed_submission, ins);


--
-- Name: ix_submissions_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_submissions_status ON public.submissions USING btree (status);


--
-- PostgreSQL database dump complete
--


