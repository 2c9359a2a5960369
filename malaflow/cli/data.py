"""Commands about data: plugins, snapshots, their observables and plots, the catalog, descriptors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from .common import (
    CatalogOption, ClusterOption, SchemeOption, SnapshotArg, catalog_at, on_cluster, open_store, parse_options,
    print_records, store_of, app, catalog_app, descriptors_app, plot_app,
)
from ..catalog import Catalog, default_catalog_path
from ..errors import MalaflowError


@app.command("plugins")
def plugins_cmd(kind: Optional[str] = typer.Option(None, help="descriptors, targets, models or readers")) -> None:
    """List registered plugins: name, kind, version and source package."""
    from ..plugins import list_plugins

    infos = list_plugins(kind)
    typer.echo(f"{'name':<20} {'kind':<12} {'version':<10} {'package':<24} {'entry point':<18} description")
    for p in infos:
        desc = getattr(p.cls, "description", "") or (p.cls.__doc__ or "").strip().split("\n")[0]
        typer.echo(f"{p.name:<20} {p.kind:<12} {p.version:<10} {p.package:<24} {p.entry_point:<18} {desc}")



@app.command("info")
def info_cmd(target: str = SnapshotArg, catalog: Optional[Path] = CatalogOption) -> None:
    """Summarise one snapshot store."""
    from ..store import load_snapshot

    from ..descriptor_store import interrupted_descriptors

    path = store_of(target, catalog)
    typer.echo(f"{path}:\n{load_snapshot(path).summary()}")
    for name, (done, total) in interrupted_descriptors(path).items():
        typer.echo(f"descriptors/{name}: interrupted, {done} of {total} chunks written "
                   f"({total - done} missing) — run the same `descriptors compute` again to resume")


@app.command("observables")
def observables_cmd(target: str = SnapshotArg, scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption,
                    pseudo_dir: Optional[Path] = typer.Option(None, help="Folder of the UPF files [found automatically]")) -> None:
    """Fermi level, N, band energy, −TS, energy terms and total free energy from the LDOS, beside DFT."""
    from ..observables import observables_table

    typer.echo(observables_table(open_store(target, catalog), scheme, pseudo_dir))


@app.command("export")
def export_cmd(
    targets: list[str] = typer.Argument(..., help="Snapshot stores or catalog ids"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the files"),
    descriptor: str = typer.Option("bispectrum", help="The stored descriptors to write as NAME.in.npy"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Write snapshots in MALA's layout (NAME.in.npy, NAME.out.npy, NAME.info.json, NAME.pp.ldos.in):
    MALA trains and tests on the same data."""
    from ..mala_export import export_mala

    for target in targets:
        store = store_of(target, catalog)
        name = store.name[: -len(".zarr")] if store.name.endswith(".zarr") else store.name
        written = export_mala(store, output, name, descriptor)
        typer.echo(f"{target} → {', '.join(str(p) for p in written)}")


@app.command("align")
def align_cmd(
    targets: list[str] = typer.Argument(..., help="Snapshot stores or catalog ids to align"),
    reference: str = typer.Option(..., help="The snapshot whose band bottom the others are moved onto"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the aligned copies (descriptors included)"),
    threshold: float = typer.Option(1e-3, help="Band bottom: where the mean LDOS first exceeds this × its peak"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Align the LDOS of snapshots on their band bottom (MALA's LDOSAligner); prints each shift."""
    from ..ldos_alignment import align_stores

    shifts = align_stores([store_of(t, catalog) for t in targets], store_of(reference, catalog), output, threshold)
    for store, k in shifts.items():
        typer.echo(f"{store}: shifted by {k:+d} energy steps → {output / Path(store).name}")


@app.command("structure")
def structure_cmd(
    source: str = typer.Argument(..., help="A snapshot store or catalog id, or any file ASE reads (a trajectory: all frames)"),
    r_max: Optional[float] = typer.Option(None, help="g(r) and g₃ range (Å) [half the smallest cell height]"),
    bins: int = typer.Option(100, help="g(r) bins"),
    k_max: float = typer.Option(8.0, help="S(k) range (1/Å)"),
    tpcf_bins: int = typer.Option(20, help="g₃ bins per radius"),
    valence: Optional[list[str]] = typer.Option(None, help="Ion charges for the Ewald energy, e.g. Be=2 [a snapshot's]"),
    plot: Optional[Path] = typer.Option(None, help="PNG of g(r), S(k) and g₃(r, r, r)"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """The ionic structure: g(r), S(k), g₃ and the Ewald energy of a snapshot or trajectory."""
    from ..ionic import ionic_summary

    frames, charges = _frames_and_valence(source, catalog, valence)
    summary = ionic_summary(frames, charges, r_max, bins, k_max, tpcf_bins)
    typer.echo(summary.text)
    if plot is not None:
        from ..plots import plot_ionic_structure

        typer.echo(f"wrote {plot_ionic_structure(summary.rdf, summary.ssf, summary.tpcf, plot, Path(source).name)}")


def _frames_and_valence(source: str, catalog: Optional[Path], valence: Optional[list[str]]):
    """Configurations of a snapshot or structure file, and the ions' charges if known."""
    charges: dict[str, float] = {}
    for item in valence or []:
        element, _, value = item.partition("=")
        try:
            charges[element.strip()] = float(value)
        except ValueError:
            raise MalaflowError(f"--valence wants ELEMENT=CHARGE, e.g. Be=2; got {item!r}") from None
    if source.endswith(".zarr") or Path(source).is_dir() or not Path(source).exists():
        from ..snapshot import Snapshot

        ds = open_store(source, catalog)
        atoms = Snapshot.from_dataset(ds).atoms
        if not charges and len(set(atoms.get_chemical_symbols())) == 1 and ds.attrs.get("n_electrons"):
            charges = {atoms.get_chemical_symbols()[0]: ds.attrs["n_electrons"] / len(atoms)}
        return [atoms], charges
    import ase.io

    try:
        return ase.io.read(source, index=":"), charges
    except Exception as exc:  # ASE raises many kinds for a file it cannot read
        raise MalaflowError(f"{source}: ASE cannot read it as a structure ({exc})") from None


@plot_app.command("dos")
def plot_dos_cmd(target: str = SnapshotArg, output: Path = typer.Option(Path("dos.png"), "-o", "--output"),
                 scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption) -> None:
    """DOS with the Fermi level marked."""
    from ..plots import plot_dos

    typer.echo(f"wrote {plot_dos(open_store(target, catalog), output, scheme)}")


@plot_app.command("density")
def plot_density_cmd(target: str = SnapshotArg, output: Path = typer.Option(Path("density.png"), "-o", "--output"),
                     axis: str = typer.Option("z", help="x, y or z"), index: Optional[int] = typer.Option(None, help="Plane index [middle]"),
                     scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption) -> None:
    """A slice of the electron density at the self-consistent Fermi level."""
    from ..plots import plot_density_slice

    typer.echo(f"wrote {plot_density_slice(open_store(target, catalog), output, axis, index, scheme)}")


@catalog_app.command("list")
def catalog_list(catalog: Optional[Path] = CatalogOption) -> None:
    """List every snapshot in the catalog."""
    cat = catalog_at(catalog)
    typer.echo(f"catalog {cat.path}")
    print_records(cat.records)


@catalog_app.command("show")
def catalog_show(id: str, catalog: Optional[Path] = CatalogOption) -> None:
    """Print one snapshot record in full."""
    record = catalog_at(catalog).get(id)
    typer.echo(yaml.safe_dump(record.to_yaml(), sort_keys=False, allow_unicode=True).rstrip())


@catalog_app.command("query")
def catalog_query(
    elements: Optional[list[str]] = typer.Option(None, "--elements", "-e", help="Contains all these elements"),
    temperature: Optional[str] = typer.Option(None, "--temperature", "-t", help="LO:HI in K"),
    code: Optional[str] = typer.Option(None, help="qe, vasp, mala, ..."),
    split: Optional[str] = typer.Option(None, help="train, validation or test"),
    dataset: Optional[str] = typer.Option(None),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Snapshots matching all the criteria given."""
    t_range = None
    if temperature:
        lo, sep, hi = temperature.partition(":")
        try:
            t_range = (float(lo) if lo else 0.0, float(hi) if hi else float("inf"))
        except ValueError:
            raise MalaflowError(f"--temperature takes LO:HI in K, got {temperature!r}") from None
        if not sep:
            t_range = (t_range[0], t_range[0])
    print_records(catalog_at(catalog).query(elements=elements, temperature=t_range, code=code, split=split, dataset=dataset))


@catalog_app.command("add")
def catalog_add(
    path: Path = typer.Argument(..., help="DFT output to read (file or folder)"),
    reader: Optional[str] = typer.Option(None, help="Reader plugin [default: the first that recognises PATH]"),
    id: Optional[str] = typer.Option(None, help="Snapshot id [default: from the file name]"),
    dataset: Optional[str] = typer.Option(None),
    split: Optional[str] = typer.Option(None, help="train, validation or test"),
    option: list[str] = typer.Option([], "--option", "-o", help="Reader option KEY=VALUE (repeatable), e.g. ldos=cubes/"),
    chunks: Optional[int] = typer.Option(None, help="Spatial chunk edge of the Zarr store [32]"),
    overwrite: bool = typer.Option(False, help="Replace a record and store with the same id"),
    store: bool = typer.Option(True, "--store/--no-store", help="Write the Zarr store now (--no-store: at `catalog ingest`)"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Read PATH with a reader plugin, write its Zarr store, and record it."""
    cat_path = catalog or default_catalog_path(write=True)
    cat = Catalog.load(cat_path) if Path(cat_path).exists() else Catalog(cat_path)
    record = cat.add(path, reader=reader, id=id, dataset=dataset, split=split, chunks=chunks,
                     overwrite=overwrite, write_store=store, **parse_options(option))
    typer.echo(f"added {record.id} → {record.store}" + ("" if store else " (written at `malaflow catalog ingest`)"))


@catalog_app.command("init")
def catalog_init(path: Path = typer.Argument(Path("catalog.yaml"), help="Where to create it")) -> None:
    """Create an empty catalog (stores go to stores/ beside it)."""
    if path.exists():
        raise MalaflowError(f"{path} exists already")
    Catalog(path).save()
    typer.echo(f"created {path}; add snapshots with `malaflow catalog add PATH -c {path}`")


@catalog_app.command("ingest")
def catalog_ingest(
    ids: Optional[list[str]] = typer.Argument(None, help="Snapshot ids [default: all]"),
    force: bool = typer.Option(False, help="Rewrite stores that exist"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Write the Zarr stores of catalogued snapshots from their raw files."""
    cat = catalog_at(catalog, write=True)
    written = cat.ingest(ids or None, force=force)
    for store in written:
        typer.echo(f"wrote {store}")
    if not written:
        typer.echo(f"nothing to do: every store of {cat.path} exists (--force rewrites them)")


@catalog_app.command("validate")
def catalog_validate(catalog: Optional[Path] = CatalogOption) -> None:
    """Check catalog.yaml and the checksums of every raw file."""
    cat = catalog_at(catalog)
    for r in cat.records:
        cat.verify(r.id)
    typer.echo(f"{cat.path}: {len(cat.records)} snapshots, all raw files present and unchanged")
    for store in cat.unrecorded_stores():
        typer.echo(f"warning: {store} is in the store folder but no record names it (an interrupted add?)")


@descriptors_app.command("list")
def descriptors_list() -> None:
    """Every descriptor plugin with its parameters and their defaults."""
    from ..descriptors import describe_params
    from ..plugins import list_plugins

    for p in list_plugins("descriptors"):
        doc = (p.cls.__doc__ or "").strip().split("\n")[0]
        how = "blockwise (any chunk, any worker)" if getattr(p.cls, "blockwise", True) else "whole grid per task"
        notes = [how] + ([f"features '{p.cls.features}'"] if p.cls.features not in ("", p.name) else []) \
            + ([f"preferred on {'/'.join(p.cls.preferred_on)}"] if p.cls.preferred_on else [])
        typer.echo(f"{p.name}  [{p.package} {p.version}; {'; '.join(notes)}]\n  {doc}")
        for name, default, help in describe_params(p.cls):
            typer.echo(f"    {name + '=' + repr(default):<28} {help}")
        typer.echo("")


@descriptors_app.command("compute")
def descriptors_compute(
    targets: Optional[list[str]] = typer.Argument(None, help="Snapshot stores (.zarr) or catalog ids [default: every catalogued snapshot]"),
    plugin: str = typer.Option("bispectrum", "--plugin", "-p", help="Descriptor plugin (see `malaflow descriptors list`)"),
    param: list[str] = typer.Option([], "--param", help="Plugin parameter KEY=VALUE (repeatable), e.g. twojmax=8"),
    chunks: Optional[int] = typer.Option(None, help="Spatial chunk edge of the stored array [32]"),
    overwrite: bool = typer.Option(False, help="Recompute and replace stored descriptors of the same name"),
    catalog: Optional[Path] = CatalogOption,
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Compute descriptors into snapshot stores, in parallel, with a progress bar.

    An interrupted run (Ctrl-C) keeps the chunks written; the same command resumes."""
    from ..compute import compute_descriptors
    from ..descriptors import get_descriptor
    from ..store import list_descriptors

    if targets:
        paths = [store_of(t, catalog) for t in targets]
    else:
        cat = catalog_at(catalog, write=True)
        paths = [cat.resolve(r.store) for r in cat.records]
    descriptor = get_descriptor(plugin, parse_options(param))
    name = descriptor.store_name()
    cached = [p for p in paths if name in list_descriptors(p)]
    with on_cluster(cluster):
        arrays = compute_descriptors(paths, descriptor, chunks=chunks, overwrite=overwrite)
    for path, arr in zip(paths, arrays):
        state = "present (parameters equal)" if path in cached and not overwrite else "written"
        typer.echo(f"{path}: descriptors/{name} {tuple(arr.shape)} {state}")
