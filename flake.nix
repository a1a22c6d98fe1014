{
  description = "mlbuild: a content-addressed build system for ML pipelines";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f:
        nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
    in
    {
      packages = forAllSystems (pkgs: rec {
        mlbuild = pkgs.rustPlatform.buildRustPackage {
          pname = "mlbuild";
          version = cargoToml.workspace.package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;

          # Only the binary crate; the library crates are built as its dependencies.
          cargoBuildFlags = [ "-p" "mlbuild" ];

          # rusqlite's `bundled` feature compiles SQLite from source with the C compiler
          # stdenv already provides, so no pkg-config and no system libsqlite3.
          nativeBuildInputs = [ ];

          # The test suite runs actions in user namespaces, which the Nix build sandbox
          # does not allow; run it with `cargo test` (or nextest) outside Nix.
          doCheck = false;

          meta = {
            description = "Content-addressed, sandboxed build system for ML pipelines";
            license = pkgs.lib.licenses.asl20;
            mainProgram = "mlbuild";
            platforms = systems;
          };
        };
        default = mlbuild;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.mlbuild}/bin/mlbuild";
          meta.description = "Run mlbuild";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.cargo-nextest
            pkgs.python3
            # Builds the `python_env` targets (examples/sklearn, docs/python.md).
            pkgs.uv
            # What the tests start or call: nginx (the WebDAV remote-cache test) and
            # openssl (keys interoperate with it).
            pkgs.nginx
            pkgs.openssl
            # The OCI tests' registry (its binary is `registry`; Debian calls it
            # `docker-registry`) and skopeo, which reads what mlbuild pushes.
            pkgs.distribution
            pkgs.skopeo
          ];
          # rust-analyzer and friends find the standard library sources here.
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });
    };
}
