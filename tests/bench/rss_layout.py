#!/usr/bin/env python3
"""What of the static nixproc-init is resident, and the layout that keeps it small.

The init's idle RSS is almost all pages of its own file: text and read-only data mapped from the
page cache. A page fault in a file mapping maps up to 64 KiB around the faulting page
(the kernel's fault-around), so what counts is how many 64 KiB windows the start-up touches, not how
much code it runs. daemon/hot-text.ld lays out the code run up to idle first in .text; this helper
makes that list and reports the breakdown, from the linker map the build writes beside the binary
(daemon/nixproc-init.map).

  rss_layout.py breakdown MAP PID
      resident KiB per mapping and, for the binary's pages, per component (a page holding several
      components is split by bytes); the 64 KiB text windows resident outside .text.hot_start, by
      component (hot-text.ld is stale when there are any but pugixml's).
  rss_layout.py hot-ld MAP [--keep OLD.ld] [--trace SCENARIO:LACKEY.log]... [--faults SCENARIO:PERF.txt]...
      writes a new hot-text.ld to stdout: OLD's entries in their order, then the input sections that
      ran in the traces (valgrind --tool=lackey --trace-mem=yes) or faulted in a real run (perf
      script of exceptions:page_fault_user: ip=...), in order of first execution, each in the group
      of the first scenario it ran in.
"""
import bisect
import collections
import re
import struct
import subprocess
import sys

HOT = '.text.hot_start'
MAX_SECTION = 48 * 1024  # a bigger input section (pugixml's .text: 140 KiB) costs less left where it is


def read_map(path):
    """Allocated input sections of the link: (address, size, output section, input section, file)."""
    secs, layout, out, pending = [], False, None, None
    addr_line = re.compile(r'^\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S.*)$')
    for line in open(path):
        if line.startswith('Linker script and memory map'):
            layout = True
            continue
        if not layout:
            continue
        m = re.match(r'^(\.\S+)', line)
        if m:
            out, pending = m.group(1), None
            continue
        m = re.match(r'^ (\.\S+|COMMON)\s*(.*)$', line)
        if m:
            mm = re.match(r'(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S.*)$', m.group(2))
            if mm:
                secs.append((int(mm.group(1), 16), int(mm.group(2), 16), out, m.group(1), mm.group(3).strip()))
                pending = None
            else:
                pending = m.group(1)
            continue
        if pending:
            mm = addr_line.match(line)
            if mm:
                secs.append((int(mm.group(1), 16), int(mm.group(2), 16), out, pending, mm.group(3).strip()))
            pending = None
    skip = ('.debug', '.comment', '.note.stapsdt', '.gnu.build.attributes', '.stab')
    return sorted(s for s in secs if s[0] > 0 and s[1] > 0 and not s[2].startswith(skip))


class Layout:
    def __init__(self, map_path):
        self.secs = read_map(map_path)
        self.starts = [s[0] for s in self.secs]
        names = [self._symbol(s) for s in self.secs]
        todo = sorted({n for n in names if n})
        out = subprocess.run(['c++filt'], input='\n'.join(todo), capture_output=True, text=True).stdout.split('\n')
        demangled = dict(zip(todo, out))
        self.comps = [self._component(s, demangled.get(n, '')) for s, n in zip(self.secs, names)]

    @staticmethod
    def _symbol(s):
        m = re.match(r'^\.[a-z_.]+?\.(_Z\S+)$', s[3])
        return m.group(1) if m else ''

    @staticmethod
    def _component(s, demangled):
        """By the archive the section comes from; in our own objects, by the namespace of the function
        (the templates and inline functions of header-only libraries are compiled there)."""
        f = s[4]
        m = re.search(r'\(([^)]*)\)$', f)
        member = m.group(1) if m else f.rsplit('/', 1)[-1]
        if 'libstdc++' in f:
            if member in ('ios_init.o', 'globals_io.o'):
                return 'libstdc++ iostream init'
            if re.search(r'locale|facet|codecvt|ctype|monetary|numeric|time_members|collate|messages', member):
                return 'libstdc++ locale'
            if re.search(r'stream|ios|basic_file|stdio', member):
                return 'libstdc++ iostreams'
            return 'libstdc++ (strings, new, EH, RTTI)'
        if 'libc.a' in f or 'libm' in f or re.search(r'crt[1in]\.o|crtbegin|crtend', f):
            if re.match(r'(libc-start|libc-tls|dl-\w+|init-first|libc_early_init|elision-conf|pthread_mutex_conf|'
                        r'init-misc|cpu_features|cacheinfo|static-reloc|enbl-secure|setup-vdso|crt\w*|'
                        r'cxa_atexit|getrandom|sbrk|brk|getenv|getrlimit64|libc_multiple_libcs)\.o$', member) \
                    or re.search(r'crt[1in]\.o|crtbegin|crtend', f):
                return 'glibc start-up (csu, static dl, TLS, tunables, vDSO)'
            if re.match(r'(gconv\w*|newlocale|uselocale|btowc|wctob|wctype_l|findlocale|setlocale|loadlocale|'
                        r'lc-\w+|C-\w+|C_name|xlocale|localename|global-locale|dcigettext|dcgettext|tsearch|'
                        r'strerror\w*|errlist)\.o$', member):
                return 'glibc locale, gconv, gettext'
            if member in ('malloc.o', 'arena.o', 'morecore.o'):
                return 'glibc malloc'
            if re.match(r'(str|mem|wcs|wmem|stp|rawmem)\w*(-[\w-]+)?\.o$', member):
                return 'glibc string functions'
            return 'glibc (stdio, syscalls, other)'
        if 'libgcc' in f:
            return 'libgcc (unwinder)'
        if 'libyaml-cpp' in f:
            return 'yaml-cpp'
        if 'libpugixml' in f:
            return 'pugixml'
        if 'libnixproc' not in f and not re.search(r'main\.cpp\.o$', f):
            return 'other: ' + member
        head = demangled.split('(')[0]
        for pattern, name in ((r'\bspdlog::', 'spdlog/fmt'), (r'\bfmt::', 'spdlog/fmt'), (r'\bYAML::', 'yaml-cpp'),
                              (r'\bboost::asio::', 'Boost.Asio'), (r'\bboost::process::', 'Boost.Process'),
                              (r'\bboost::json::', 'Boost.JSON'), (r'\bboost::', 'Boost (other)'),
                              (r'\bpugi::', 'pugixml'), (r'\bnixproc::', 'nixproc (ours)')):
            if head and re.search(pattern, head):
                return name
        if re.match(r'^[\w:<>, *&]*\bstd::', head):
            return 'libstdc++ templates (instantiated in our objects)'
        if 'LoggingRuntime' in f:
            return 'spdlog/fmt'
        return 'nixproc (ours)'

    def owner(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        return i if i >= 0 and addr < self.secs[i][0] + self.secs[i][1] else None

    def page_split(self, vpn):
        lo, hi = vpn << 12, (vpn + 1) << 12
        split = collections.Counter()
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        while i < len(self.secs) and self.secs[i][0] < hi:
            a, b = max(lo, self.secs[i][0]), min(hi, self.secs[i][0] + self.secs[i][1])
            if b > a:
                split[self.comps[i]] += b - a
            i += 1
        return split

    def output_range(self, name):
        inside = [s for s in self.secs if s[2] == name]
        return (min(s[0] for s in inside), max(s[0] + s[1] for s in inside)) if inside else (0, 0)


def resident_pages(pid):
    maps = []
    with open(f'/proc/{pid}/maps') as f, open(f'/proc/{pid}/pagemap', 'rb') as pm:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split('-'))
            name = fields[5] if len(fields) > 5 else ''
            if name == '[vsyscall]':
                continue
            pm.seek((lo >> 12) * 8)
            data = pm.read(((hi - lo) >> 12) * 8)
            present = [(lo >> 12) + i for i in range(len(data) // 8)
                       if struct.unpack_from('<Q', data, i * 8)[0] >> 63]
            maps.append({'lo': lo, 'hi': hi, 'perms': fields[1], 'name': name, 'present': present})
    return maps


def breakdown(map_path, pid):
    layout = Layout(map_path)
    maps = resident_pages(pid)
    exe = open(f'/proc/{pid}/cmdline').read().split('\0')[0]
    print(f'idle RSS of {exe} (pid {pid}), KiB resident per mapping:')
    for n, m in enumerate(maps):
        kind = m['name'] or 'anonymous (bss end, mmap)'
        if m['name'].startswith('/'):
            kind = {'r-xp': 'binary: text', 'rw-p': 'binary: .data'}.get(m['perms'], 'binary: .rodata, .eh_frame')
            if m['perms'] == 'r--p' and n == 0:
                kind = 'binary: ELF headers'
            elif m['perms'] == 'r--p' and n + 1 < len(maps) and maps[n + 1]['perms'] == 'rw-p':
                kind = 'binary: RELRO (.data.rel.ro, .got)'
        print(f"  {m['lo']:#014x}-{m['hi']:#014x} {m['perms']} {kind:34} {len(m['present']) * 4:6}")
    print('  (the pages of the file are clean page cache; heap, stack, .data, bss and the RELRO pages'
          ' written at start-up are anonymous)')
    table = collections.defaultdict(collections.Counter)
    for m in maps:
        if not m['name'].startswith('/'):
            continue
        col = 'text' if 'x' in m['perms'] else ('data' if 'w' in m['perms'] else 'read-only')
        for vpn in m['present']:
            split = layout.page_split(vpn)
            total = sum(split.values())
            if not total:
                table[col]['(ELF headers, padding)'] += 4096
            for comp, size in split.items():
                table[col][comp] += size * 4096 / total
    cols = ['text', 'read-only', 'data']
    comps = sorted({c for col in cols for c in table[col]}, key=lambda c: -sum(table[col][c] for col in cols))
    print('\nthe binary\'s resident pages per component, KiB:')
    print(f"  {'component':55} {'text':>6} {'rodata':>6} {'data':>6} {'total':>6}")
    for c in comps:
        v = [table[col][c] / 1024 for col in cols]
        if sum(v) < 1:
            continue
        print(f'  {c:55} {v[0]:6.0f} {v[1]:6.0f} {v[2]:6.0f} {sum(v):6.0f}')
    hot_lo, hot_hi = layout.output_range(HOT)
    text = next(m for m in maps if m['name'].startswith('/') and 'x' in m['perms'])
    windows = sorted({vpn >> 4 for vpn in text['present']})
    cold = [w for w in windows if not (hot_lo >> 16 <= w <= (hot_hi - 1) >> 16)]
    if not hot_hi:
        print(f'\ntext: {len(text["present"]) * 4} KiB resident in {len(windows)} 64 KiB windows; '
              f'no {HOT} (linked without daemon/hot-text.ld)')
        return
    print(f'\ntext: {len(text["present"]) * 4} KiB resident in {len(windows)} 64 KiB windows; '
          f'{HOT} {(hot_hi - hot_lo) // 1024} KiB; {len(cold)} windows resident outside it:')
    for w in cold:
        pages = [p for p in text['present'] if p >> 4 == w]
        names = collections.Counter()
        for p in pages:
            for c, b in layout.page_split(p).items():
                names[c] += b
        print(f'  {w << 16:#x}: {len(pages) * 4} KiB of ' + ', '.join(f'{c} {b // 1024}K' for c, b in names.most_common(3)))


def pattern(sec):
    _, _, _, name, f = sec
    m = re.search(r'([^/]*\.a)\(([^)]*)\)$', f)
    if re.match(r'^\.text\.(unlikely\.|hot\.)?_Z', name):
        return f'*({name})'  # a function's own section
    if m:
        return f'*{m.group(1)}:{m.group(2)}({name})'
    return f'*{f.rsplit("/", 1)[-1]}({name})'


def multiarch_siblings(sec):
    """glibc's string functions are chosen by CPU at start-up (IFUNC): all variants of one that ran."""
    m = re.search(r'libc\.a\(((?:str|mem|wcs|wmem|stp|rawmem)\w*?)-[\w-]+\.o\)$', sec[4])
    return [f'*libc.a:{m.group(1)}-*.o(.text .text.*)'] if m else []


STARTUP = '*(.text.startup .text.startup.*)'  # every static constructor runs


def hot_ld(argv):
    """Entries are grouped by scenario (/* NAME */ in the list), the groups in the order they first
    appear (--keep's, then the arguments'): the code of the first scenario stays together whatever
    the others add, and the others' code after it is not touched when only the first one runs."""
    keep, inputs, map_path = None, [], argv[0]
    it = iter(argv[1:])
    for a in it:
        if a == '--keep':
            keep = next(it)
        elif a in ('--trace', '--faults'):
            scenario, _, path = next(it).partition(':')
            inputs.append((a, scenario, path))
        else:
            sys.exit(f'hot-ld: unknown argument {a}')
    layout = Layout(map_path)
    groups, skipped = {}, []  # scenario -> entries
    if keep:
        text = open(keep).read()
        group = None
        for line in text.splitlines():
            m = re.match(r'^    /\* ([\w-]+) \*/$', line)
            if m:
                group = groups.setdefault(m.group(1), [])
            elif line.startswith('    *') and line.strip() != STARTUP and group is not None:
                group.append(line.strip())
        m = re.search(r'Left in place, too big to move: (.*?)\.\n', text, re.S)
        if m:
            skipped = [' '.join(s.split()) for s in m.group(1).split('; ')]
    known = {e for g in groups.values() for e in g}
    kept = len(known)
    ran = {}  # input section -> the first scenario it ran in, in order of first execution

    def note(addr, scenario):
        i = layout.owner(addr)
        if i is not None and layout.secs[i][2].startswith('.text') and i not in ran:
            ran[i] = scenario

    for kind, scenario, path in inputs:
        groups.setdefault(scenario, [])
        if kind == '--trace':
            for line in open(path):
                if line.startswith('I'):
                    try:
                        note(int(line[3:].split(',')[0], 16), scenario)
                    except ValueError:  # a line cut where a trace was split
                        pass
        else:
            for m in re.finditer(r'\bip=(0x[0-9a-f]+)', open(path).read()):
                note(int(m.group(1), 16), scenario)
    for i, scenario in ran.items():
        sec = layout.secs[i]
        if sec[3].startswith('.text.startup'):
            continue
        if sec[1] > MAX_SECTION:
            what = f'{sec[3]} of {sec[4].rsplit("/", 1)[-1]} ({sec[1] // 1024} KiB)'
            if what not in skipped:
                skipped.append(what)
            continue
        for p in [pattern(sec)] + multiarch_siblings(sec):
            if p not in known:
                known.add(p)
                groups[scenario].append(p)
    print('/* The code nixproc-init runs from exec to idle, laid out first in .text (in an output section of\n'
          '   its own, before .text): the kernel maps up to 64 KiB around each page fault in a file mapping,\n'
          '   so start-up code spread over the 2 MiB of .text would make most of it resident. Generated by\n'
          '   tests/bench/hot-text.sh, grouped by the scenario that first ran it; an entry that matches\n'
          '   nothing is harmless (the list covers -O2 and -O3 builds), and code missing here still runs,\n'
          '   from a page of its own.')
    if skipped:
        print('   Left in place, too big to move: ' + '; '.join(skipped) + '.')
    print('*/\nSECTIONS\n{\n  ' + HOT + ' : {\n    ' + STARTUP)
    for scenario, entries in groups.items():
        print(f'    /* {scenario} */')
        for e in entries:
            print('    ' + e)
    print('  }\n}\nINSERT BEFORE .text;')
    print(f'hot-ld: {kept} entries kept, {len(known) - kept} added', file=sys.stderr)


if __name__ == '__main__':
    if len(sys.argv) >= 4 and sys.argv[1] == 'breakdown':
        breakdown(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == 'hot-ld':
        hot_ld(sys.argv[2:])
    else:
        sys.exit(__doc__)
