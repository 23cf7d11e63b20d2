# Installs gcingest as a Windows service. Run as Administrator:
#   powershell -ExecutionPolicy Bypass -File install.ps1 -Exe .\gcingest.exe
param(
    [Parameter(Mandatory = $true)][string]$Exe,
    [string]$InstallDir = "$env:ProgramFiles\gcingest",
    [string]$DataDir = "$env:ProgramData\gcingest"
)
$ErrorActionPreference = "Stop"

New-Item -ItemType Directory -Force -Path $InstallDir, $DataDir | Out-Null
Copy-Item -Force $Exe "$InstallDir\gcingest.exe"

# Config, token and state: Administrators and SYSTEM only (the config may hold the token).
icacls $DataDir /inheritance:r /grant:r "Administrators:(OI)(CI)F" "SYSTEM:(OI)(CI)F" | Out-Null

$config = "$DataDir\config.toml"
if (-not (Test-Path $config)) {
    $state = "$DataDir\state.db"
    $token = "$DataDir\token"
    @"
# gcingest configuration; every key: config.example.toml. Paths are absolute;
# single-quoted TOML strings keep backslashes as they are.
[grand_challenge]
url = "https://grand-challenge.org"
token_file = '$token'

[state]
path = '$state'

[[watch]]
path = 'D:\scanner1\outbox'
archive = "my-archive"
interface = "ct-image"
poll = false   # true for network shares
"@ | Set-Content -Encoding UTF8 $config
    Write-Host "wrote $config: edit it, put the API token in $token"
}

Write-Host "then:"
Write-Host "  & '$InstallDir\gcingest.exe' check --config '$config'"
Write-Host "  & '$InstallDir\gcingest.exe' service install --config '$config'"
Write-Host "  & '$InstallDir\gcingest.exe' service start"
