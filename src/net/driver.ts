/** How one VM NIC joins the lab network, as QEMU needs it. */
export interface NicAttachment {
  /** argv put in front of the QEMU binary (socket_vmnet_client <socket> passes the socket as fd 3). */
  wrapper: string[];
  /** The -netdev value without its id, e.g. `tap,ifname=pvt0,script=no,downscript=no` or `socket,fd=3`. */
  netdev: string;
}

export interface NetworkStatus {
  driver: string;
  /** Bridge name or socket path. */
  name: string;
  up: boolean;
  detail: Record<string, string | number | boolean>;
}

/** One interface for every way of building the lab's L2 segment. */
export interface NetworkDriver {
  readonly name: 'bridge' | 'socket_vmnet';
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): Promise<NetworkStatus>;
  /** Prepare the VM's NIC before QEMU starts; idempotent. Refuses a NIC a live process holds. */
  attach(vm: { name: string; mac: string }): Promise<NicAttachment>;
  /**
   * Undo attach once QEMU has exited; a NIC that is already gone is fine. A NIC a process still
   * holds is left in place with an error: it belongs to a running VM.
   */
  detach(vm: { name: string }): Promise<void>;
}
