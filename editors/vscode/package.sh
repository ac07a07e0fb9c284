#!/usr/bin/env bash
# Package the extension as a .vsix (install it with `code --install-extension FILE`).
#
#   editors/vscode/package.sh [OUT.vsix]        default: editors/vscode/cljassist-VERSION.vsix
#
# With npm's registry reachable this is `vsce package` (@vscode/vsce, fetched by npx). Without it,
# or with CLJASSIST_VSIX_BUILDER=zip, the same archive is written directly in the VSIX format
# (an Open Packaging zip: [Content_Types].xml, extension.vsixmanifest, extension/...) with the
# files package.json's "files" names. Either way nothing is left in the source tree but the .vsix.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$here/package.json")"
out="$(realpath -m "${1:-$here/cljassist-$version.vsix}")"
VSCE="@vscode/vsce@3.9.2"  # pinned: the archive it writes is what the tests check

build_with_vsce() {
  # vsce wants a LICENSE and a repository URL: this extension ships inside the cljassist repository.
  (cd "$here" && npx --yes "$VSCE" package --no-dependencies --skip-license --allow-missing-repository \
      --out "$out") >&2
}

build_zip() {
  python3 - "$here" "$out" <<'PY'
import json
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

root, out = Path(sys.argv[1]), Path(sys.argv[2])
manifest = json.loads((root / "package.json").read_text(encoding="utf-8"))
files = sorted({p for pattern in manifest["files"] for p in root.glob(pattern) if p.is_file()})
if not files:
    sys.exit("package.sh: package.json's \"files\" names no file")
entries = {"extension/package.json": root / "package.json"}
for path in files:
    name = path.relative_to(root).as_posix()
    entries["extension/" + ("readme.md" if name.lower() == "readme.md" else name)] = path

def attr(value) -> str:
    return quoteattr(str(value))

types = {".json": "application/json", ".js": "application/javascript", ".md": "text/markdown",
         ".vsixmanifest": "text/xml"}
used = sorted({Path(name).suffix for name in entries} | {".vsixmanifest"})
content_types = ('<?xml version="1.0" encoding="utf-8"?>\n'
                 '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 + "".join(f'<Default Extension={attr(s)} ContentType={attr(types.get(s, "application/octet-stream"))}/>'
                           for s in used)
                 + "</Types>")
readme = ('<Asset Type="Microsoft.VisualStudio.Services.Content.Details" Path="extension/readme.md" Addressable="true" />'
          if "extension/readme.md" in entries else "")
vsixmanifest = f'''<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011" xmlns:d="http://schemas.microsoft.com/developer/vsx-schema-design/2011">
  <Metadata>
    <Identity Language="en-US" Id={attr(manifest["name"])} Version={attr(manifest["version"])} Publisher={attr(manifest["publisher"])} />
    <DisplayName>{escape(manifest.get("displayName", manifest["name"]))}</DisplayName>
    <Description xml:space="preserve">{escape(manifest.get("description", ""))}</Description>
    <Tags>{escape(",".join(manifest.get("keywords", [])))}</Tags>
    <Categories>{escape(",".join(manifest.get("categories", [])))}</Categories>
    <GalleryFlags>Public</GalleryFlags>
    <Properties>
      <Property Id="Microsoft.VisualStudio.Code.Engine" Value={attr(manifest["engines"]["vscode"])} />
      <Property Id="Microsoft.VisualStudio.Code.ExtensionDependencies" Value="" />
      <Property Id="Microsoft.VisualStudio.Code.ExtensionPack" Value="" />
      <Property Id="Microsoft.VisualStudio.Code.ExtensionKind" Value="workspace" />
      <Property Id="Microsoft.VisualStudio.Code.ExecutesCode" Value="true" />
    </Properties>
  </Metadata>
  <Installation>
    <InstallationTarget Id="Microsoft.VisualStudio.Code"/>
  </Installation>
  <Dependencies/>
  <Assets>
    <Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" Addressable="true" />
    {readme}
  </Assets>
</PackageManifest>
'''
out.parent.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as vsix:
    vsix.writestr("extension.vsixmanifest", vsixmanifest)
    vsix.writestr("[Content_Types].xml", content_types)
    for name, path in entries.items():
        vsix.write(path, name)
PY
}

if [ "${CLJASSIST_VSIX_BUILDER:-vsce}" = zip ]; then
  build_zip
elif command -v npx >/dev/null && build_with_vsce; then
  :
else
  echo "package.sh: vsce unavailable (no npx, or npm's registry unreachable); writing the VSIX directly" >&2
  build_zip
fi
echo "$out"
