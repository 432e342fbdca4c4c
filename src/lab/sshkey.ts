import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { writeFileAtomic } from '../core/fsutil.js';

function sshString(data: Uint8Array | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export interface SshKeyPair {
  privateKey: string;
  publicKey: string;
}

/** An ed25519 key pair in OpenSSH's own formats (openssh-key-v1 private, authorized_keys public). */
export function generateEd25519(comment = 'pvmlab'): SshKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  if (!jwk.d || !jwk.x) throw new PvmlabError('ed25519 key generation returned no key material');
  const seed = Buffer.from(jwk.d, 'base64url');
  const pub = Buffer.from(jwk.x, 'base64url');
  const pubBlob = Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
  const check = randomBytes(4).readUInt32BE();
  let priv = Buffer.concat([
    uint32(check),
    uint32(check),
    sshString('ssh-ed25519'),
    sshString(pub),
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ]);
  const pad: number[] = [];
  for (let i = 1; (priv.length + pad.length) % 8 !== 0; i++) pad.push(i);
  priv = Buffer.concat([priv, Buffer.from(pad)]);
  const body = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    uint32(1),
    sshString(pubBlob),
    sshString(priv),
  ]);
  const b64 = body.toString('base64').replace(/.{1,70}/g, '$&\n');
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `ssh-ed25519 ${pubBlob.toString('base64')} ${comment}\n`,
  };
}

/**
 * Make sure the lab key pair exists. A private key whose `.pub` went missing gets its
 * public half rewritten from it (the original failed later in that case).
 */
export async function ensureSshKey(path: string): Promise<{ created: boolean; publicKey: string }> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  let priv: string | undefined;
  try {
    priv = await fs.readFile(path, 'utf8');
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  if (priv === undefined) {
    const pair = generateEd25519();
    await writeFileAtomic(path, pair.privateKey, 0o600);
    await writeFileAtomic(`${path}.pub`, pair.publicKey, 0o644);
    return { created: true, publicKey: pair.publicKey };
  }
  try {
    return { created: false, publicKey: await fs.readFile(`${path}.pub`, 'utf8') };
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  const pub = publicKeyFromOpenSshPrivate(priv);
  await writeFileAtomic(`${path}.pub`, pub, 0o644);
  return { created: false, publicKey: pub };
}

/** Recover `ssh-ed25519 <blob> <comment>` from an unencrypted openssh-key-v1 private key. */
export function publicKeyFromOpenSshPrivate(pem: string): string {
  const notAKey = () =>
    new PvmlabError('the lab SSH key is not an OpenSSH private key; remove it and run pvmlab setup');
  const b64 = pem.replace(/-----(BEGIN|END) OPENSSH PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  const body = Buffer.from(b64, 'base64');
  const magic = 'openssh-key-v1\0';
  if (body.subarray(0, magic.length).toString() !== magic) throw notAKey();
  let off = magic.length;
  // A truncated or corrupt key must give the message above, not a RangeError.
  const next = (): Buffer => {
    if (off + 4 > body.length) throw notAKey();
    const len = body.readUInt32BE(off);
    if (off + 4 + len > body.length) throw notAKey();
    const v = body.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return v;
  };
  next(); // cipher
  next(); // kdf
  next(); // kdf options
  if (off + 4 > body.length) throw notAKey();
  off += 4; // key count
  const pubBlob = next();
  next(); // the private section: present in full
  if (pubBlob.length < 4 || 4 + pubBlob.readUInt32BE(0) > pubBlob.length) throw notAKey();
  const keyType = pubBlob.subarray(4, 4 + pubBlob.readUInt32BE(0)).toString();
  if (!/^[\x21-\x7e]+$/.test(keyType)) throw notAKey();
  return `${keyType} ${pubBlob.toString('base64')} pvmlab\n`;
}
