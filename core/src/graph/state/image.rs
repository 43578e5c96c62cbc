//! Image config metadata on a [`State`]: the setters of the fields runs do not use (entrypoint,
//! cmd, labels, exposed ports, volumes, stop signal, healthcheck, shell, onbuild, manifest
//! annotations), applying a whole [`ImageConfig`], and image sources whose base config is
//! resolved through an [`ImageMetaResolver`] (Go llb's `llb.Image(ref, WithMetaResolver(r))`).
//!
//! Resolution is explicit: [`State::image`] and [`State::oci_layout`] stay pure (they never touch
//! the network or the disk); [`State::image_with`] and [`State::oci_layout_with`] ask a resolver
//! once, when the state is built, and the state then carries the base image's config.

use super::source::normalize_image_ref;
use super::State;
use crate::error::Result;
use crate::graph::image_config::{Healthcheck, ImageConfig};
use crate::graph::resolve::{ImageMetaResolver, ImageOptions, ImageRef};
use crate::graph::source::OciRef;
use std::path::PathBuf;
use std::sync::Arc;

impl State {
    /// Sets the image config entrypoint. An inherited cmd (from a base image) is reset, as a
    /// Dockerfile's `ENTRYPOINT` does; a cmd set on this state is kept.
    pub fn with_entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> State {
        Arc::make_mut(&mut self.meta.image).entrypoint = Some(args.into_iter().map(Into::into).collect());
        if self.meta.cmd_inherited {
            Arc::make_mut(&mut self.meta.image).cmd = None;
            self.meta.cmd_inherited = false;
        }
        self
    }

    /// Sets the image config cmd.
    pub fn with_cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> State {
        Arc::make_mut(&mut self.meta.image).cmd = Some(args.into_iter().map(Into::into).collect());
        self.meta.cmd_inherited = false;
        self
    }

    /// Adds (or replaces) an image config label.
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> State {
        Arc::make_mut(&mut self.meta.image).labels.insert(k.into(), v.into());
        self
    }

    /// Adds an exposed port (`80/tcp`, `53/udp`; a bare number means `/tcp`, as Docker's `EXPOSE`).
    pub fn with_exposed_port(mut self, port: impl Into<String>) -> State {
        let p = port.into();
        let p = if p.contains('/') { p } else { format!("{p}/tcp") };
        Arc::make_mut(&mut self.meta.image).exposed_ports.insert(p);
        self
    }

    /// Adds a volume (a container path).
    pub fn with_volume(mut self, path: impl Into<String>) -> State {
        Arc::make_mut(&mut self.meta.image).volumes.insert(path.into());
        self
    }

    /// Sets the stop signal (`SIGTERM`, `9`).
    pub fn with_stop_signal(mut self, signal: impl Into<String>) -> State {
        Arc::make_mut(&mut self.meta.image).stop_signal = Some(signal.into());
        self
    }

    /// Sets the healthcheck (Docker extension).
    pub fn with_healthcheck(mut self, healthcheck: Healthcheck) -> State {
        Arc::make_mut(&mut self.meta.image).healthcheck = Some(healthcheck);
        self
    }

    /// Sets the shell of shell-form commands (Docker extension).
    pub fn with_shell<I: IntoIterator<Item = S>, S: Into<String>>(mut self, shell: I) -> State {
        Arc::make_mut(&mut self.meta.image).shell = Some(shell.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an `OnBuild` trigger (Docker extension).
    pub fn with_on_build(mut self, trigger: impl Into<String>) -> State {
        Arc::make_mut(&mut self.meta.image).on_build.get_or_insert_with(Vec::new).push(trigger.into());
        self
    }

    /// Adds (or replaces) an annotation of the exported image's manifest.
    pub fn with_annotation(mut self, k: impl Into<String>, v: impl Into<String>) -> State {
        Arc::make_mut(&mut self.meta.image).annotations.insert(k.into(), v.into());
        self
    }

    /// Applies a whole image config, the way a base image's config is inherited: each env entry
    /// is set (replacing the same key), a non-empty working dir and user replace the state's,
    /// labels, ports, volumes and annotations are added, the other fields replace the state's
    /// when set (a history replaces the state's). The cmd so applied counts as inherited (a later
    /// entrypoint resets it).
    pub fn with_image_config(mut self, c: &ImageConfig) -> State {
        for (k, v) in c.env_pairs() {
            self = self.with_env(k, v);
        }
        if let Some(d) = c.working_dir.as_deref().filter(|d| !d.is_empty()) {
            self = self.with_cwd(d);
        }
        if let Some(u) = c.user.as_deref().filter(|u| !u.is_empty()) {
            self = self.with_user(u);
        }
        let img = Arc::make_mut(&mut self.meta.image);
        if c.entrypoint.is_some() {
            img.entrypoint = c.entrypoint.clone();
        }
        if c.cmd.is_some() {
            img.cmd = c.cmd.clone();
            self.meta.cmd_inherited = true;
        }
        img.labels.extend(c.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        img.exposed_ports.extend(c.exposed_ports.iter().cloned());
        img.volumes.extend(c.volumes.iter().cloned());
        img.annotations.extend(c.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        if c.stop_signal.is_some() {
            img.stop_signal.clone_from(&c.stop_signal);
        }
        if c.healthcheck.is_some() {
            img.healthcheck.clone_from(&c.healthcheck);
        }
        if c.shell.is_some() {
            img.shell.clone_from(&c.shell);
        }
        if c.on_build.is_some() {
            img.on_build.clone_from(&c.on_build);
        }
        img.args_escaped |= c.args_escaped;
        if c.author.is_some() {
            img.author.clone_from(&c.author);
        }
        if !c.history.is_empty() {
            // The base image's history: the exporter adds entries for layers built on it.
            img.history.clone_from(&c.history);
        }
        self
    }

    /// `docker-image://REF` for `o.platform` (an op platform constraint; the host's when `None`).
    /// Pure: nothing is resolved (see [`State::image_with`]).
    pub fn image_with_options(reference: impl AsRef<str>, o: &ImageOptions) -> State {
        let s = State::image(reference);
        match &o.platform {
            Some(p) => s.with_platform(p.to_pb()),
            None => s,
        }
    }

    /// `docker-image://REF` whose state carries the image's config (env, working dir, user,
    /// entrypoint, cmd, labels, exposed ports, volumes, ...), resolved now through `resolver`
    /// for `o.platform`: later runs use its env, working dir and user, and
    /// [`State::image_config`] returns it. With `o.resolve_digest` the source is pinned to the
    /// resolved manifest digest (`REF@sha256:...`); without it (the default, as in BuildKit) the
    /// solve resolves the tag again.
    pub fn image_with(reference: impl AsRef<str>, o: &ImageOptions, resolver: &dyn ImageMetaResolver) -> Result<State> {
        let normalized = normalize_image_ref(reference.as_ref());
        let resolved = resolver
            .resolve_image_config(&ImageRef::Registry(normalized.clone()), o.platform.as_ref())
            .map_err(|e| e.context(format!("resolving the config of image {normalized}")))?;
        let pinned = if o.resolve_digest && !normalized.contains('@') {
            format!("{normalized}@{}", resolved.digest)
        } else {
            normalized
        };
        tracing::debug!(image = %pinned, digest = %resolved.digest, "base image config resolved");
        Ok(State::image_with_options(pinned, o).with_image_config(&resolved.config))
    }

    /// `oci-layout://DIR` for `o.platform`; pure, like [`State::image_with_options`].
    pub fn oci_layout_with_options(dir: impl Into<PathBuf>, reference: OciRef, o: &ImageOptions) -> State {
        let s = State::oci_layout(dir, reference);
        match &o.platform {
            Some(p) => s.with_platform(p.to_pb()),
            None => s,
        }
    }

    /// `oci-layout://DIR:TAG|@DIGEST` whose state carries the image's config, read now through
    /// `resolver` (like [`State::image_with`]; `o.resolve_digest` does not apply: a layout source
    /// is resolved from the same directory when solved).
    pub fn oci_layout_with(
        dir: impl Into<PathBuf>,
        reference: OciRef,
        o: &ImageOptions,
        resolver: &dyn ImageMetaResolver,
    ) -> Result<State> {
        let dir = dir.into();
        let image = ImageRef::OciLayout { dir: dir.clone(), reference: reference.clone() };
        let resolved = resolver
            .resolve_image_config(&image, o.platform.as_ref())
            .map_err(|e| e.context(format!("resolving the config of image {image}")))?;
        Ok(State::oci_layout_with_options(dir, reference, o).with_image_config(&resolved.config))
    }
}
