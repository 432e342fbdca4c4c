import * as v from 'valibot';
import { PvmlabError } from '../core/errors.js';
import { describeIssues } from '../core/vmdef.js';

/**
 * The shapes of the stack's answers the CLI reads. The stack is a peer on the network (or
 * whatever answers at PVMLAB_STACK_URL): every answer is checked here before the CLI uses it,
 * so a wrong one is an error naming the peer, not a TypeError deep in the printing.
 */

const isoTime = v.pipe(
  v.string(),
  v.check((s) => !Number.isNaN(Date.parse(s)), 'at must be a date'),
);

export const StackEventSchema = v.object({
  at: isoTime,
  mac: v.string(),
  type: v.string(),
  source: v.string(),
  detail: v.optional(v.record(v.string(), v.union([v.string(), v.number(), v.boolean()]))),
});
/** A timeline event as the stack's API returns it. */
export type StackEvent = v.InferOutput<typeof StackEventSchema>;

export const TimelineSchema = v.object({ events: v.array(StackEventSchema) });

export const HealthSchema = v.object({
  ok: v.boolean(),
  machines: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  dnsmasq: v.optional(
    v.union([
      v.literal('off'),
      v.object({
        pid: v.nullable(v.pipe(v.number(), v.integer())),
        restarts: v.pipe(v.number(), v.integer(), v.minValue(0)),
        serving: v.optional(v.boolean()),
        error: v.optional(v.string()),
      }),
    ]),
  ),
  timeline: v.optional(v.object({ ok: v.boolean(), error: v.optional(v.string()) })),
});
export type Health = v.InferOutput<typeof HealthSchema>;

/** The stack answered, but not with what a pvmlab stack answers. */
export class StackAnswerError extends PvmlabError {
  constructor(url: string, what: string, why: string) {
    super(
      `the stack at ${url} answered with ${what} pvmlab does not understand (${why}); ` +
        'is a pvmlab stack of this version serving there (PVMLAB_STACK_URL, or the provisioner address in lab.yaml)?',
    );
    this.name = 'StackAnswerError';
  }
}

/** The first few problems: a peer's answer can be large and wrong everywhere. */
function why(issues: readonly v.BaseIssue<unknown>[]): string {
  return describeIssues(issues.slice(0, 3)) + (issues.length > 3 ? `; and ${issues.length - 3} more` : '');
}

/** Parse a JSON text from the stack against a schema, or throw naming the URL. */
export function parseStackJson<S extends v.GenericSchema>(
  schema: S,
  text: string,
  url: string,
  what: string,
): v.InferOutput<S> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new StackAnswerError(url, what, `not JSON: ${JSON.stringify(text.slice(0, 60))}`);
  }
  const r = v.safeParse(schema, data);
  if (!r.success) throw new StackAnswerError(url, what, why(r.issues));
  return r.output;
}

/** Check an already-parsed value (e.g. /healthz as another module fetched it). */
export function checkStackValue<S extends v.GenericSchema>(
  schema: S,
  data: unknown,
): { ok: true; value: v.InferOutput<S> } | { ok: false; error: string } {
  const r = v.safeParse(schema, data);
  return r.success ? { ok: true, value: r.output } : { ok: false, error: why(r.issues) };
}
