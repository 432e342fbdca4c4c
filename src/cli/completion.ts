import type { Command } from 'commander';

/** The command tree, as the completion scripts need it. */
export interface CommandNode {
  path: string[];
  description: string;
  options: string[];
  subcommands: string[];
  /** The first positional is a VM name: complete from `pvmlab __vms`. */
  takesVm: boolean;
}

export function commandTree(root: Command): CommandNode[] {
  const out: CommandNode[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const subs = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden);
    const args = (cmd as unknown as { registeredArguments?: { name(): string }[] }).registeredArguments ?? [];
    out.push({
      path,
      description: cmd.description(),
      options: [...cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => !!x)), '--help'],
      subcommands: subs.map((c) => c.name()),
      takesVm: args[0]?.name() === 'vm-name',
    });
    for (const s of subs) walk(s, [...path, s.name()]);
  };
  walk(root, []);
  return out;
}

const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

export function bashCompletion(nodes: CommandNode[]): string {
  const cases = nodes
    .map((n) => {
      const words = [...n.subcommands, ...n.options].join(' ');
      return `    ${q(n.path.join(' '))}) words=${q(words)}; vm=${n.takesVm ? 1 : 0} ;;`;
    })
    .join('\n');
  return `# bash completion for pvmlab; load with: source <(pvmlab completion bash)
_pvmlab() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w i words vm
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    _pvmlab_words "$path"
    if [[ " $words " == *" $w "* ]]; then path="\${path:+$path }$w"; fi
  done
  _pvmlab_words "$path"
  if [[ "$cur" != -* && "$vm" == 1 ]]; then
    COMPREPLY=($(compgen -W "$(pvmlab __vms 2>/dev/null)" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
_pvmlab_words() {
  words="" vm=0
  case "$1" in
${cases}
  esac
}
complete -F _pvmlab pvmlab
`;
}

export function zshCompletion(nodes: CommandNode[]): string {
  return `#compdef pvmlab
# zsh completion for pvmlab; load with: source <(pvmlab completion zsh)
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(nodes)}`;
}

export function fishCompletion(nodes: CommandNode[]): string {
  const lines = [
    '# fish completion for pvmlab; load with: pvmlab completion fish | source',
    'complete -c pvmlab -f',
  ];
  // Leaf names repeat across groups (vm start, network start; clean, vm clean): a condition names the
  // whole path and rules out the other top-level groups, or `network start` would offer VM names.
  const groups = nodes.filter((n) => n.path.length === 1 && n.subcommands.length).map((n) => n.path[0]);
  for (const n of nodes) {
    const others = groups.filter((g) => g !== n.path[0]);
    const cond =
      n.path.length === 0
        ? '__fish_use_subcommand'
        : [
            ...n.path.map((p) => `__fish_seen_subcommand_from ${p}`),
            ...(others.length ? [`not __fish_seen_subcommand_from ${others.join(' ')}`] : []),
            ...(n.subcommands.length ? [`not __fish_seen_subcommand_from ${n.subcommands.join(' ')}`] : []),
          ].join('; and ');
    const parent = nodes.find((p) => p.path.join(' ') === n.path.join(' '));
    for (const s of n.subcommands) {
      const child = nodes.find((c) => c.path.join(' ') === [...n.path, s].join(' '));
      lines.push(`complete -c pvmlab -n ${q(cond)} -a ${s} -d ${q(child?.description ?? '')}`);
    }
    for (const o of parent?.options ?? []) {
      if (o.startsWith('--')) lines.push(`complete -c pvmlab -n ${q(cond)} -l ${o.slice(2)}`);
    }
    if (n.takesVm) lines.push(`complete -c pvmlab -n ${q(cond)} -a '(pvmlab __vms 2>/dev/null)'`);
  }
  return `${lines.join('\n')}\n`;
}
