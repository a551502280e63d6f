'use strict';
// Private uploads (issue 15): files go from the browser straight to the uploads bucket with a
// presigned PUT, and come back through a short-lived signed URL (an S3 presigned GET, or a
// CloudFront signed URL where a CDN is configured). The app never sees a file's bytes: it
// signs, checks with a HEAD that the object arrived, and keeps the rows (table uploads).
//
// Two S3 clients: `internal` talks to the endpoint this server reaches (the storage host's
// private address locally, S3's own on AWS); `signer` only presigns, for the endpoint
// browsers reach (the storage host's published port locally, S3's own on AWS).

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const { S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand } = require('@aws-sdk/client-s3');
const { getSignedUrl } = require('@aws-sdk/s3-request-presigner');
const cloudfront = require('@aws-sdk/cloudfront-signer');
const config = require('./config');

const MAX_NAME = 255;
// A MIME type without parameters (RFC 6838's restricted names), e.g. image/png.
const CONTENT_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$/i;
// Control characters, and the path separators a name must not hold.
const BAD_NAME = /[\u0000-\u001f\u007f/\\]/;

class InputError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function s3Client(endpoint) {
  const c = config.uploads;
  const options = {
    region: c.region,
    forcePathStyle: c.forcePathStyle,
    // Presigned PUTs must not carry a checksum of an empty body (the SDK's default since
    // 3.729 for PutObject): the browser's file would never match it.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  if (endpoint) options.endpoint = endpoint;
  if (c.accessKeyId) options.credentials = { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey };
  if (endpoint.startsWith('https:') && c.caFile) {
    // The storage host's certificate is issued by the environment's CA only.
    options.requestHandler = {
      httpsAgent: new https.Agent({ keepAlive: true, ca: fs.readFileSync(c.caFile) }),
      connectionTimeout: 3000,
      requestTimeout: 10000,
    };
  } else {
    options.requestHandler = { connectionTimeout: 3000, requestTimeout: 10000 };
  }
  return new S3Client(options);
}

// Configured at start: a misconfigured CDN (no key id or key) stops the server at once.
function setup() {
  const c = config.uploads;
  if (!c.bucket) return null;
  let privateKey = null;
  if (c.cdnUrl) {
    if (!/^https?:\/\/[^/?#]+$/.test(c.cdnUrl)) throw new Error('MAHA_UPLOADS_CDN_URL must be an origin (https://host)');
    if (!c.cloudfrontKeyId || !c.cloudfrontPrivateKeyFile) {
      throw new Error('MAHA_UPLOADS_CDN_URL needs MAHA_CLOUDFRONT_KEY_ID and MAHA_CLOUDFRONT_PRIVATE_KEY_FILE');
    }
    privateKey = fs.readFileSync(c.cloudfrontPrivateKeyFile, 'utf8');
    crypto.createPrivateKey(privateKey); // a broken key fails here, not at the first download
  }
  return {
    internal: s3Client(c.endpoint),
    signer: s3Client(c.publicEndpoint || c.endpoint),
    privateKey,
  };
}

const state = setup();

function enabled() {
  return state !== null;
}

function describe() {
  const c = config.uploads;
  if (!state) return { enabled: false };
  return {
    enabled: true,
    bucket: c.bucket,
    endpoint: c.endpoint || 's3',
    publicEndpoint: c.publicEndpoint || c.endpoint || 's3',
    downloads: c.cdnUrl ? `cloudfront ${c.cdnUrl}` : 's3',
  };
}

// {name, type, size} as the client declared them, checked.
function declared(body) {
  const name = typeof body?.name === 'string' ? body.name.trim() : '';
  if (name.length < 1 || name.length > MAX_NAME || BAD_NAME.test(name) || name === '.' || name === '..') {
    throw new InputError(400, `name must be 1 to ${MAX_NAME} characters, without control characters, / or \\`);
  }
  const type = typeof body?.type === 'string' && body.type ? body.type.trim().toLowerCase() : 'application/octet-stream';
  if (!CONTENT_TYPE.test(type)) throw new InputError(400, 'type must be a MIME type such as image/png, without parameters');
  const size = body?.size;
  if (!Number.isSafeInteger(size) || size < 0) throw new InputError(400, 'size must be a whole number of bytes');
  if (size > config.uploads.maxBytes) {
    throw new InputError(413, `files may be at most ${config.uploads.maxBytes} bytes`);
  }
  return { name, type, size };
}

function newKey(userId) {
  return `uploads/${Number(userId)}/${crypto.randomUUID()}`;
}

// A presigned PUT whose signature covers Content-Type and Content-Length: S3 refuses the
// upload unless the browser sends exactly these (so the declared size is the stored size).
async function putUrl(key, { type, size }) {
  const command = new PutObjectCommand({ Bucket: config.uploads.bucket, Key: key, ContentType: type, ContentLength: size });
  const url = await getSignedUrl(state.signer, command, {
    expiresIn: config.uploads.urlSeconds,
    signableHeaders: new Set(['content-type', 'content-length']),
  });
  return { url, method: 'PUT', headers: { 'Content-Type': type }, expiresIn: config.uploads.urlSeconds };
}

// The object's size and type, or null when it is not there.
async function head(key) {
  try {
    const found = await state.internal.send(new HeadObjectCommand({ Bucket: config.uploads.bucket, Key: key }));
    return { size: Number(found.ContentLength), type: found.ContentType || '' };
  } catch (err) {
    if (err.name === 'NotFound' || err.$metadata?.httpStatusCode === 404) return null;
    throw err;
  }
}

async function remove(key) {
  await state.internal.send(new DeleteObjectCommand({ Bucket: config.uploads.bucket, Key: key }));
}

// Content-Disposition for the download: an ASCII fallback and the UTF-8 name (RFC 6266).
function disposition(name) {
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

// Where the owner's browser fetches the file: short-lived, signed, never through this app.
async function downloadUrl(row) {
  const c = config.uploads;
  if (c.cdnUrl) {
    const url = `${c.cdnUrl}/${row.object_key.split('/').map(encodeURIComponent).join('/')}`;
    return cloudfront.getSignedUrl({
      url,
      keyPairId: c.cloudfrontKeyId,
      privateKey: state.privateKey,
      dateLessThan: new Date(Date.now() + c.urlSeconds * 1000).toISOString(),
    });
  }
  const command = new GetObjectCommand({
    Bucket: c.bucket,
    Key: row.object_key,
    ResponseContentDisposition: disposition(row.file_name),
    ResponseContentType: row.content_type,
  });
  return getSignedUrl(state.signer, command, { expiresIn: c.urlSeconds });
}

// -- rows -------------------------------------------------------------------------------------

const COLUMNS = 'id, user_id, object_key, file_name, content_type, size, status, created_at, stored_at';

async function insert(db, userId, key, { name, type, size }) {
  const { rows } = await db.query(
    `insert into uploads (user_id, object_key, file_name, content_type, size) values ($1, $2, $3, $4, $5)
     returning ${COLUMNS}`,
    [userId, key, name, type, size],
  );
  return rows[0];
}

async function find(db, id) {
  const { rows } = await db.query(`select ${COLUMNS} from uploads where id = $1`, [id]);
  return rows[0] || null;
}

async function markStored(db, id) {
  const { rows } = await db.query(
    `update uploads set status = 'stored', stored_at = coalesce(stored_at, now()) where id = $1 returning ${COLUMNS}`,
    [id],
  );
  return rows[0];
}

async function listStored(db, userId) {
  const { rows } = await db.query(
    `select ${COLUMNS} from uploads where user_id = $1 and status = 'stored' order by id desc limit 1000`,
    [userId],
  );
  return rows;
}

async function deleteRow(db, id) {
  await db.query('delete from uploads where id = $1', [id]);
}

// What a client sees of a row (not the object's key).
function view(row) {
  return {
    id: Number(row.id),
    name: row.file_name,
    type: row.content_type,
    size: Number(row.size),
    status: row.status,
    created_at: row.created_at,
    stored_at: row.stored_at,
  };
}

module.exports = {
  InputError,
  enabled,
  describe,
  declared,
  newKey,
  putUrl,
  head,
  remove,
  downloadUrl,
  insert,
  find,
  markStored,
  listStored,
  deleteRow,
  view,
};
