# Build the Windows one-folder bundle and its zip, then run the frozen self-test.
#   powershell -ExecutionPolicy Bypass -File packaging\build_windows.ps1 -Flavour cpu|cuda
param([ValidateSet("cpu", "cuda")][string]$Flavour = "cpu")
$ErrorActionPreference = "Stop"
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$Root = Split-Path -Parent $Here
$Build = if ($env:BUILD_DIR) { $env:BUILD_DIR } else { Join-Path $Root "build\bundle-$Flavour" }
$Version = (Select-String -Path (Join-Path $Root "fssgui\__init__.py") -Pattern '__version__ = "(.*)"').Matches[0].Groups[1].Value
New-Item -ItemType Directory -Force -Path $Build | Out-Null
py -3.11 -m venv "$Build\venv"
$Py = "$Build\venv\Scripts\python.exe"
& $Py -m pip install --upgrade pip
if ($Flavour -eq "cpu") {
  & $Py -m pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
} else {
  & $Py -m pip install --index-url https://download.pytorch.org/whl/cu130 torch==2.14.1 torchvision==0.29.1
}
& $Py -m pip install -r "$Here\requirements-build.txt" "$Root"
$env:FSSGUI_FLAVOUR = $Flavour
& $Py -m PyInstaller --clean --noconfirm --distpath "$Build\dist" --workpath "$Build\work" "$Here\fssgui.spec"
$Bundle = "$Build\dist\fssgui-$Flavour"
# torch >= 2.4 needs the MSVC OpenMP runtime (libomp140.x86_64.dll) beside fbgemm.dll, and the
# MSVC C++ runtime: copy them from the build machine's System32 (Visual C++ Redistributable).
foreach ($dll in "libomp140.x86_64.dll", "msvcp140.dll", "vcruntime140.dll", "vcruntime140_1.dll") {
  $src = Join-Path $env:WINDIR "System32\$dll"
  if (Test-Path $src) { Copy-Item $src "$Bundle\_internal\torch\lib\" -Force }
  else { Write-Warning "$dll not found: install the Visual C++ Redistributable on the build machine" }
}
Copy-Item "$Here\README.md" "$Bundle\PACKAGING.md"
$env:QT_QPA_PLATFORM = "offscreen"
& "$Bundle\fssgui.exe" self-test
if ($LASTEXITCODE -ne 0) { throw "self-test failed" }
$Zip = "$Build\fssgui-$Version-windows-x86_64-$Flavour.zip"
Compress-Archive -Path $Bundle -DestinationPath "$Zip.tmp.zip" -Force
Move-Item "$Zip.tmp.zip" $Zip -Force
Write-Output "built $Zip"
