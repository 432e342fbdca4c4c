import { PvmlabError } from '../core/errors.js';
import { which } from '../core/exec.js';
import { existsSync } from 'node:fs';
import { resolveLabConfig, type LabConfig } from '../lab/config.js';
import { BridgeDriver } from '../net/bridge.js';
import type { NetworkDriver } from '../net/driver.js';
import { SocketVmnetDriver } from '../net/socketvmnet.js';
import type { Context } from './context.js';

/** The lab network driver named in lab.yaml (PVMLAB_NETWORK overrides it). */
export function networkDriver(ctx: Context, config: LabConfig): NetworkDriver {
  const kind = ctx.env.PVMLAB_NETWORK ?? config.network;
  if (kind === 'bridge') {
    if (process.platform !== 'linux') throw new PvmlabError('the bridge network driver works on Linux only');
    const lab = resolveLabConfig(config);
    return new BridgeDriver(
      {
        bridge: config.bridge,
        hostAddress: `${config.host_ip}/${lab.subnet.prefix}`,
        ...(lab.v6 ? { hostAddress6: `${lab.v6.host}/${lab.v6.subnet.prefix}` } : {}),
      },
      ctx.runner,
    );
  }
  if (kind === 'socket_vmnet')
    return new SocketVmnetDriver({
      runner: ctx.runner,
      env: ctx.env,
      exists: existsSync,
      which: (c) => which(c, ctx.env),
    });
  throw new PvmlabError(`unknown network driver '${kind}' (bridge or socket_vmnet)`);
}
