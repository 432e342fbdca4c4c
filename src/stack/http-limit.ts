/**
 * Token buckets by key (a machine's MAC): `burst` requests at once, then `perSecond`. Keeps a
 * client that POSTs in a loop from turning the disk and the timeline over as fast as it can.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Take one token for `key`; false = over the limit. */
  take(key: string): boolean {
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: t };
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
    b.at = t;
    if (b.tokens < 1) {
      this.buckets.set(key, b);
      return false;
    }
    b.tokens -= 1;
    // Bounded: keys are the lab's machines, but forget them all rather than grow without end.
    if (!this.buckets.has(key) && this.buckets.size >= 10_000) this.buckets.clear();
    this.buckets.set(key, b);
    return true;
  }
}
