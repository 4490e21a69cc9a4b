"""A vim25 WSDL for oslo.vmware, generated: vcsim serves none and no package ships one.

oslo.vmware (suds) reads ``vimService.wsdl`` before its first call. VMware's
SDK has it, but neither vcsim (govmomi 0.24.2 or later) nor any Debian or
PyPI package here ships it; oslo.vmware 4.10 ships only the vim25 *type*
schemas (``oslo_vmware/wsdl/7.0/vim-types.xsd`` and friends, for its PBM
client). The operations' message types are what is missing, so this module
writes them from govmomi's own Go definitions (Debian's
``golang-github-vmware-govmomi-dev``, ``vim25/types/types.go``)::

    type DeleteDatastoreFileRequestType struct {              -> complexType
        This       ManagedObjectReference  `xml:"_this"`
        Name       string                  `xml:"name"`
        Datacenter *ManagedObjectReference `xml:"datacenter,omitempty"`
    }
    type DeleteDatastoreFile_Task DeleteDatastoreFileRequestType   -> element, operation
    type DeleteDatastoreFile_TaskResponse struct {                  -> element
        Returnval ManagedObjectReference `xml:"returnval"`
    }

Output, in one directory: ``vimService.wsdl`` (the service, what
oslo.vmware's ``wsdl_loc`` names or what vcsim serves at
``/sdk/vimService.wsdl``), ``vim.wsdl`` (elements, messages, port type,
document/literal binding), ``vim-messagetypes.xsd`` and a copy of
oslo.vmware's 7.0 type schemas. By default only the operations a datastore
driver uses (:data:`OPERATIONS`): suds parses a WSDL of every operation
(915) in 4-5 s per process, this one in about 1 s.

Run by hand: ``python tests/backends/vcsim_wsdl.py OUTDIR [--all]``.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

GOVMOMI_TYPES = Path("/usr/share/gocode/src/github.com/vmware/govmomi/vim25/types/types.go")
XSD_VERSION = "7.0"
TYPE_SCHEMAS = ("vim-types.xsd", "core-types.xsd", "query-types.xsd", "reflect-types.xsd")

#: What a datastore driver and its tests call: session, inventory walk
#: without recursive traversal, datastore files and tasks.
OPERATIONS = (
    "RetrieveServiceContent", "Login", "Logout", "SessionIsActive", "TerminateSession",
    "CurrentTime",
    "RetrieveProperties", "RetrievePropertiesEx", "ContinueRetrievePropertiesEx",
    "CancelRetrievePropertiesEx", "CreateFilter", "DestroyPropertyFilter", "WaitForUpdatesEx",
    "CreateContainerView", "DestroyView", "FindByInventoryPath", "FindChild",
    "RefreshDatastore", "MakeDirectory", "DeleteDatastoreFile_Task", "MoveDatastoreFile_Task",
    "CopyDatastoreFile_Task", "SearchDatastore_Task", "SearchDatastoreSubFolders_Task",
    "CancelTask",
)

GO_XSD = {
    "string": "xsd:string", "bool": "xsd:boolean", "int8": "xsd:byte", "byte": "xsd:byte",
    "int16": "xsd:short", "int32": "xsd:int", "int64": "xsd:long", "float32": "xsd:float",
    "float64": "xsd:double", "time.Time": "xsd:dateTime", "AnyType": "xsd:anyType",
}

_FIELD = re.compile(r'^\s+\w+\s+(?P<type>\S+)\s+`xml:"(?P<tag>[^"]*)"`\s*$')


class UnknownType(LookupError):
    pass


def _structs(src: str, suffix: str) -> dict[str, str]:
    return dict(re.findall(rf"^type (\w+){suffix} struct \{{\n(.*?)^\}}", src, re.M | re.S))


def _element(go_field: str, known: set[str]) -> str:
    m = _FIELD.match(go_field)
    if m is None:
        raise UnknownType(f"cannot read Go field {go_field.strip()!r}")
    gotype, (name, *opts) = m["type"], m["tag"].split(",")
    many = gotype.startswith("[]")
    optional = "omitempty" in opts or gotype.startswith(("*", "[]"))
    base = gotype.lstrip("[]*")
    if many and base == "byte":
        many, xsd = False, "xsd:base64Binary"
    elif base in GO_XSD:
        xsd = GO_XSD[base]
    elif base in known:
        xsd = f"vim25:{base}"
    elif base.startswith("Base") and base[4:] in known:    # Go's interface for a base type
        xsd = f"vim25:{base[4:]}"
    else:
        raise UnknownType(base)
    occurs = (' minOccurs="0"' if optional else "") + (' maxOccurs="unbounded"' if many else "")
    return f'<element name={quoteattr(name)} type="{xsd}"{occurs} />'


def _sequence(body: str, known: set[str], indent: str) -> str:
    lines = [_element(line, known) for line in body.splitlines() if line.strip()]
    inner = "".join(f"{indent}   {e}\n" for e in lines)
    if not lines:
        return f"{indent}<sequence />\n"
    return f"{indent}<sequence>\n{inner}{indent}</sequence>\n"


def generate(outdir: str | Path, operations: tuple[str, ...] | None = OPERATIONS,
             types_go: Path = GOVMOMI_TYPES) -> list[str]:
    """Write the WSDL into ``outdir``; ``operations=None`` means all that can be.

    Returns the operations written. An operation named explicitly that cannot
    be written raises; with ``None`` such operations (vSAN and VStorage ones
    whose types the 7.0 schemas lack) are left out.
    """
    import oslo_vmware

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    schemas = Path(oslo_vmware.__file__).parent / "wsdl" / XSD_VERSION
    for name in TYPE_SCHEMAS:
        shutil.copyfile(schemas / name, out / name)
    known = set(re.findall(r'<(?:complex|simple)Type name="(\w+)"',
                           "".join((schemas / n).read_text() for n in TYPE_SCHEMAS)))

    src = types_go.read_text()
    requests = _structs(src, "RequestType")
    responses = _structs(src, "Response")
    aliases = dict(re.findall(r"^type (\w+) (\w+)RequestType$", src, re.M))
    wanted = sorted(aliases) if operations is None else list(operations)

    types, elements, written = [], [], []
    for op in wanted:
        if op not in aliases or op not in responses:
            raise UnknownType(f"govmomi has no operation {op}")
        request = aliases[op]
        try:
            request_seq = _sequence(requests[request], known, "      ")
            response_seq = _sequence(responses[op], known, "                  ")
        except UnknownType:
            if operations is not None:
                raise
            continue
        if request not in {t[0] for t in types}:
            types.append((request, request_seq))
        elements.append((op, request, response_seq))
        written.append(op)

    (out / "vim-messagetypes.xsd").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<!-- Generated by tests/backends/vcsim_wsdl.py from govmomi vim25/types -->\n'
        '<schema targetNamespace="urn:vim25" xmlns="http://www.w3.org/2001/XMLSchema"\n'
        '   xmlns:vim25="urn:vim25" xmlns:xsd="http://www.w3.org/2001/XMLSchema"\n'
        '   elementFormDefault="qualified">\n'
        '   <include schemaLocation="vim-types.xsd" />\n'
        + "".join(f'   <complexType name="{name}RequestType">\n{seq}   </complexType>\n'
                  for name, seq in types)
        + "</schema>\n")

    schema_elements = "".join(
        f'         <element name="{op}" type="vim25:{req}RequestType" />\n'
        f'         <element name="{op}Response">\n'
        f"               <complexType>\n{seq}               </complexType>\n"
        f"         </element>\n"
        for op, req, seq in elements)
    messages = "".join(
        f'   <message name="{op}RequestMsg"><part name="parameters" element="vim25:{op}" />'
        f"</message>\n"
        f'   <message name="{op}ResponseMsg">'
        f'<part name="parameters" element="vim25:{op}Response" /></message>\n'
        for op in written)
    port_ops = "".join(
        f'      <operation name="{op}"><input message="vim25:{op}RequestMsg" />'
        f'<output message="vim25:{op}ResponseMsg" /></operation>\n' for op in written)
    binding_ops = "".join(
        f'      <operation name="{op}">\n'
        f'         <soap:operation soapAction="urn:vim25/{XSD_VERSION}" style="document" />\n'
        f'         <input><soap:body use="literal" /></input>\n'
        f'         <output><soap:body use="literal" /></output>\n'
        f"      </operation>\n" for op in written)
    (out / "vim.wsdl").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<!-- Generated by tests/backends/vcsim_wsdl.py from govmomi vim25/types -->\n'
        '<definitions targetNamespace="urn:vim25" xmlns="http://schemas.xmlsoap.org/wsdl/"\n'
        '   xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:vim25="urn:vim25"\n'
        '   xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        "   <types>\n"
        '      <schema targetNamespace="urn:vim25" xmlns="http://www.w3.org/2001/XMLSchema"\n'
        '         xmlns:vim25="urn:vim25" xmlns:xsd="http://www.w3.org/2001/XMLSchema"\n'
        '         elementFormDefault="qualified">\n'
        '         <include schemaLocation="vim-messagetypes.xsd" />\n'
        f"{schema_elements}"
        "      </schema>\n"
        "   </types>\n"
        f"{messages}"
        f'   <portType name="VimPortType">\n{port_ops}   </portType>\n'
        '   <binding name="VimBinding" type="vim25:VimPortType">\n'
        '      <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http" />\n'
        f"{binding_ops}"
        "   </binding>\n"
        "</definitions>\n")
    (out / "vimService.wsdl").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<!-- Generated by tests/backends/vcsim_wsdl.py -->\n'
        '<definitions targetNamespace="urn:vim25Service" xmlns="http://schemas.xmlsoap.org/wsdl/"\n'
        '   xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:interface="urn:vim25">\n'
        '   <import location="vim.wsdl" namespace="urn:vim25" />\n'
        '   <service name="VimService">\n'
        '      <port binding="interface:VimBinding" name="VimPort">\n'
        '         <soap:address location="https://localhost/sdk/vimService" />\n'
        "      </port>\n"
        "   </service>\n"
        "</definitions>\n")
    return written


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] != "--all"):
        print(__doc__, file=sys.stderr)
        return 2
    written = generate(argv[0], None if len(argv) == 2 else OPERATIONS)
    print(f"{len(written)} operations written to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
