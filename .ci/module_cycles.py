#!/usr/bin/env python3
"""Cycles between the modules of one folder of host/src (ARCHITECTURE.md,
"Module dependencies"): resolves every crate::, super:: and self:: path,
braces included, leaves out each file's `mod tests`, and prints each cycle
among the children of a folder; exits 1 if there is one. With a folder
argument (e.g. daemon/http, or root) it also prints that folder's graph."""
import os,re,sys,itertools
root='host/src'
# module path for each file
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs') or f=='main.rs': continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3].split('/')
        if rel[-1] in ('mod','lib'): rel=rel[:-1]
        mods[tuple(rel)]=p
def strip_tests(s):
    i=s.find('#[cfg(test)]\nmod tests')
    if i<0: i=s.find('#[cfg(test)]\npub(crate) mod tests')
    return s if i<0 else s[:i]
edges=set()
for m,p in mods.items():
    s=strip_tests(open(p).read())
    s=re.sub(r'//[^\n]*','',s)
    refs=set()
    for r in re.findall(r'crate::((?:[a-z_]+::)*[a-z_]+)',s):
        refs.add(tuple(r.split('::')))
    # super:: relative to module m (file module): super of m is m[:-1]
    for r in re.findall(r'\bsuper::((?:super::)*(?:[a-z_]+::)*[a-z_]+)',s):
        parts=r.split('::'); base=list(m[:-1])
        while parts and parts[0]=='super': parts.pop(0); base=base[:-1]
        refs.add(tuple(base+parts))
    for pre,body in re.findall(r'\b((?:crate|super|self)(?:::[a-z_]+)*)::\{([^;]*?)\};',s,flags=re.S):
        depth=0;cur='';items=[]
        for ch in body:
            if ch=='{': depth+=1
            elif ch=='}': depth-=1
            if ch==',' and depth==0: items.append(cur.strip()); cur=''
            else: cur+=ch
        items.append(cur.strip())
        for it in items:
            name=re.match(r'([a-z_]+)',it)
            if not name: continue
            full=pre+'::'+it.split('{')[0].rstrip(':').strip()
            full=re.sub(r'\s+as\s+\w+$','',full)
            if full.startswith('crate::'): refs.add(tuple(full[7:].split('::')))
            else:
                parts=full.split('::'); base=list(m) if parts[0]=='self' else list(m[:-1]); parts=parts[1:]
                while parts and parts[0]=='super': parts.pop(0); base=base[:-1]
                refs.add(tuple(base+[x for x in parts if x]))
    for r in re.findall(r'\bself::((?:[a-z_]+::)*[a-z_]+)',s):
        refs.add(tuple(list(m)+r.split('::')))
    for r in refs:
        # find longest module prefix
        t=None
        for k in range(len(r),0,-1):
            if r[:k] in mods: t=r[:k]; break
        if t is None or t==m: continue
        edges.add((m,t))
# sibling-level graph: for each folder F, nodes = children of F; edge a->b if some module under a refs some module under b
from collections import defaultdict
def child(folder,mod):
    if len(mod)>len(folder) and mod[:len(folder)]==folder: return mod[:len(folder)+1]
folders=set(m[:-1] for m in mods)|{()}
bad=False
for F in sorted(folders):
    g=defaultdict(set)
    for a,b in edges:
        ca,cb=child(F,a),child(F,b)
        if ca and cb and ca!=cb: g[ca].add(cb)
    # find SCCs
    idx={};low={};st=[];on=set();out=[];c=[0]
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in g[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: out.append(comp)
    for v in list(g):
        if v not in idx: sc(v)
    for comp in out:
        bad=True
        print('/'.join(F) or '(root)', 'CYCLE:', sorted('/'.join(x) for x in comp))
if len(sys.argv)>1:
    F=tuple(sys.argv[1].split('/')) if sys.argv[1]!='root' else ()
    g=defaultdict(set)
    for a,b in edges:
        ca,cb=child(F,a),child(F,b)
        if ca and cb and ca!=cb: g[ca[-1]].add(cb[-1])
    for k in sorted(g): print(k,'→',', '.join(sorted(g[k])))
sys.exit(1 if bad else 0)
