"""numba kernels of the night simulator (:mod:`livenight.simulate.night`, also used by
:mod:`livenight.simulate.natural`).

Written as plain functions and compiled on first use by :func:`_jit`, which replaces this module's globals by
their numba dispatchers: ``import livenight.simulate`` must not import numba, and kernels that call each other find
the compiled versions through the module globals. Callers must therefore use them as attributes of this module
(``_kernels._chunk_kernel``), never import them by name. ``cache=True`` keeps compile cost to one run.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .._optional import require



def _texture_at(x, y, k, tex, oxi, oyi, fx, fy):
    """Reflectance of the panning texture at pixel (x, y), step k: bilinear sample at a sub-pixel shift."""
    ty = y + oyi[k]
    tx = x + oxi[k]
    gx = fx[k]
    gy = fy[k]
    t00 = tex[ty, tx]
    t01 = tex[ty, tx + 1]
    t10 = tex[ty + 1, tx]
    t11 = tex[ty + 1, tx + 1]
    top = t00 + gx * (t01 - t00)
    bot = t10 + gx * (t11 - t10)
    return top + gy * (bot - top)


def _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y):
    """Reflectance and emission seen by pixel (x, y) at step k: bilinear texture sample + cars on top."""
    r = _texture_at(x, y, k, tex, oxi, oyi, fx, fy)
    e = 0.0
    for j in range(spr_w.shape[0]):
        u = x - obj_x[k, j] + 1.0  # sprite arrays carry a 1-pixel zero border
        if u < 0.0 or u >= spr_w[j] + 1.0:
            continue
        v = y - obj_y[k, j] + 1.0
        if v < 0.0 or v >= spr_h[j] + 1.0:
            continue
        iu = int(u)
        iv = int(v)
        au = u - iu
        av = v - iv
        w00 = (1.0 - au) * (1.0 - av)
        w01 = au * (1.0 - av)
        w10 = (1.0 - au) * av
        w11 = au * av
        a = (w00 * spr_a[j, iv, iu] + w01 * spr_a[j, iv, iu + 1]
             + w10 * spr_a[j, iv + 1, iu] + w11 * spr_a[j, iv + 1, iu + 1])
        if a <= 0.0:
            continue
        ar = (w00 * spr_ar[j, iv, iu] + w01 * spr_ar[j, iv, iu + 1]
              + w10 * spr_ar[j, iv + 1, iu] + w11 * spr_ar[j, iv + 1, iu + 1])
        ee = (w00 * spr_e[j, iv, iu] + w01 * spr_e[j, iv, iu + 1]
              + w10 * spr_e[j, iv + 1, iu] + w11 * spr_e[j, iv + 1, iu + 1])
        r = r * (1.0 - a) + ar
        e = e * (1.0 - a) + ee
    return r, e


def _advance_pixel(lf, lref, tlast, lin0, lin1, cur1, ta, tb, con, coff, refr, tau_ref, max_dlog, cap,
                   ev_t, ev_p, n):
    """Advance one pixel from ``ta`` to ``tb`` (µs); its log input goes linearly from ``lin0`` to ``lin1``.

    ``lf`` is the low-passed log photocurrent, ``lref`` the reference of the change detector, ``tlast`` the time of
    the last event, ``cur1`` the photocurrent at ``tb``. Events go to ``ev_t``/``ev_p`` from index ``n`` (at most
    ``cap`` of them; further crossings stay pending and fire in the next step). Returns the new state and ``n``.
    """
    d_in = lin1 - lin0
    if abs(d_in) <= max_dlog:
        # fast path (most pixel-steps): one sub-step and no threshold reached at either end. lf moves
        # monotonically inside the step, so it cannot cross a threshold in between either.
        kk = (tb - ta) * cur1
        lf_new = lf + kk / (tau_ref + kk) * (lin1 - lf)
        d0 = lf - lref
        d1 = lf_new - lref
        if -coff < d0 < con and -coff < d1 < con:
            return lf_new, lref, tlast, n
        nsub = 1
    else:
        nsub = int(math.ceil(abs(d_in) / max_dlog))
    dt = (tb - ta) / nsub
    n_first = n
    for s in range(nsub):
        t0 = ta + s * dt
        t1 = tb if s == nsub - 1 else t0 + dt
        if nsub == 1:
            lin = lin1
            cur = cur1
        else:
            lin = lin0 + d_in * (s + 1) / nsub
            cur = math.exp(lin)
        # implicit-Euler first-order low pass with tau = tau_ref / I: stable for any step, exact as dt/tau -> 0
        kk = dt * cur
        lf_new = lf + kk / (tau_ref + kk) * (lin - lf)
        slope = (lf_new - lf) / dt if dt > 0.0 else 0.0
        t = t0
        while n - n_first < cap:
            t_ready = tlast + refr
            t_a = t if t > t_ready else t_ready
            if t_a > t1:
                break
            la = lf + slope * (t_a - t0)
            d = la - lref
            if d >= con or d <= -coff:  # change accumulated during the refractory period fires at its end
                ev_t[n] = int(math.floor(t_a))
                ev_p[n] = 1 if d > 0.0 else 0
                n += 1
                lref = la
                tlast = t_a
                t = t_a
                continue
            if slope > 0.0:
                target = lref + con
                pol = 1
            elif slope < 0.0:
                target = lref - coff
                pol = 0
            else:
                break
            tc = t0 + (target - lf) / slope
            if tc > t1:
                break
            if tc < t_a:
                tc = t_a
            ev_t[n] = int(math.floor(tc))
            ev_p[n] = pol
            n += 1
            lref = target
            tlast = tc
            t = tc
        lf = lf_new
    return lf, lref, tlast, n


def _chunk_kernel(p_start, p_end, width, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y,
                  t_steps, illum, dark, tau_ref, max_dlog, refr, cap,
                  lf, lref, tlast, lin, con, coff, mean_cur, ev_t, ev_x, ev_y, ev_p, n):
    """Simulate all steps of one chunk for the flat pixel indices ``[p_start, p_end)``, pixel by pixel.

    Pixels that no car touches during the chunk (outside the cars' bounding boxes over all its steps) sample the
    texture alone, which skips the per-car tests.

    Returns ``(p_next, n)``: ``p_next < p_end`` when the event buffers are nearly full (the caller drains them
    and calls again from ``p_next``). Per-pixel state arrays are updated in place, only inside the range, so
    disjoint ranges can run concurrently (the kernel releases the GIL).
    """
    n_steps = oxi.shape[0]
    capacity = ev_t.shape[0]
    n_obj = spr_w.shape[0]
    box = np.empty((n_obj, 4))  # x0, x1, y0, y1 of each car over the chunk
    for j in range(n_obj):
        box[j, 0] = obj_x[:, j].min() - 1.0
        box[j, 1] = obj_x[:, j].max() + spr_w[j] + 1.0
        box[j, 2] = obj_y[:, j].min() - 1.0
        box[j, 3] = obj_y[:, j].max() + spr_h[j] + 1.0
    for p in range(p_start, p_end):
        if n + n_steps * cap > capacity:
            return p, n
        y = p // width
        x = p - y * width
        s_lf = np.float64(lf[p])
        s_lref = np.float64(lref[p])
        s_tl = tlast[p]
        s_lin = np.float64(lin[p])
        s_con = np.float64(con[p])
        s_coff = np.float64(coff[p])
        near_car = False
        for j in range(n_obj):
            if box[j, 0] <= x <= box[j, 1] and box[j, 2] <= y <= box[j, 3]:
                near_car = True
        acc = 0.0
        for k in range(n_steps):
            if near_car:
                r, e = _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y)
                c1 = illum * r + e + dark
            else:
                c1 = illum * _texture_at(x, y, k, tex, oxi, oyi, fx, fy) + dark
            l1 = math.log(c1)
            acc += c1
            if abs(l1 - s_lin) <= max_dlog:
                # fast path, inlined here by hand (same arithmetic as in _advance_pixel): no threshold reached
                kk = (t_steps[k + 1] - t_steps[k]) * c1
                lf_new = s_lf + kk / (tau_ref + kk) * (l1 - s_lf)
                d0 = s_lf - s_lref
                d1 = lf_new - s_lref
                if -s_coff < d0 < s_con and -s_coff < d1 < s_con:
                    s_lf = lf_new
                    s_lin = l1
                    continue
            n0 = n
            s_lf, s_lref, s_tl, n = _advance_pixel(s_lf, s_lref, s_tl, s_lin, l1, c1, t_steps[k], t_steps[k + 1],
                                                   s_con, s_coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
            for q in range(n0, n):
                ev_x[q] = x
                ev_y[q] = y
            s_lin = l1
        lf[p] = s_lf
        lref[p] = s_lref
        tlast[p] = s_tl
        lin[p] = s_lin
        mean_cur[p] = acc / n_steps if n_steps > 0 else mean_cur[p]
    return p_end, n


def _video_kernel(p_start, p_end, width, cur, t_steps, tau_ref, max_dlog, refr, cap,
                  lf, lref, tlast, lin, con, coff, mean_cur, ev_t, ev_x, ev_y, ev_p, n):
    """Like :func:`_chunk_kernel`, but the photocurrent of every pixel and step is given: ``cur[k, p]`` at
    ``t_steps[k + 1]`` (a rendered video, :mod:`livenight.simulate.natural`). Same state arrays, same return."""
    n_steps = cur.shape[0]
    capacity = ev_t.shape[0]
    for p in range(p_start, p_end):
        if n + n_steps * cap > capacity:
            return p, n
        y = p // width
        x = p - y * width
        s_lf = np.float64(lf[p])
        s_lref = np.float64(lref[p])
        s_tl = tlast[p]
        s_lin = np.float64(lin[p])
        s_con = np.float64(con[p])
        s_coff = np.float64(coff[p])
        acc = 0.0
        for k in range(n_steps):
            c1 = np.float64(cur[k, p])
            l1 = math.log(c1)
            acc += c1
            if abs(l1 - s_lin) <= max_dlog:
                kk = (t_steps[k + 1] - t_steps[k]) * c1
                lf_new = s_lf + kk / (tau_ref + kk) * (l1 - s_lf)
                d0 = s_lf - s_lref
                d1 = lf_new - s_lref
                if -s_coff < d0 < s_con and -s_coff < d1 < s_con:
                    s_lf = lf_new
                    s_lin = l1
                    continue
            n0 = n
            s_lf, s_lref, s_tl, n = _advance_pixel(s_lf, s_lref, s_tl, s_lin, l1, c1, t_steps[k], t_steps[k + 1],
                                                   s_con, s_coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
            for q in range(n0, n):
                ev_x[q] = x
                ev_y[q] = y
            s_lin = l1
        lf[p] = s_lf
        lref[p] = s_lref
        tlast[p] = s_tl
        lin[p] = s_lin
        mean_cur[p] = acc / n_steps if n_steps > 0 else mean_cur[p]
    return p_end, n


def _render_kernel(out_r, out_e, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y):
    """Render reflectance and emission of the whole view at step ``k`` of the given motion arrays."""
    height, width = out_r.shape
    for y in range(height):
        for x in range(width):
            r, e = _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y)
            out_r[y, x] = r
            out_e[y, x] = e


def _trace_kernel(log_in, cur_in, t_us, con, coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p):
    """One pixel driven by a given photocurrent series (for tests and studies); starts in steady state."""
    lf = log_in[0]
    lref = lf
    tl = -1e18
    n = 0
    for k in range(1, t_us.shape[0]):
        if n + cap > ev_t.shape[0]:
            break
        lf, lref, tl, n = _advance_pixel(lf, lref, tl, log_in[k - 1], log_in[k], cur_in[k], t_us[k - 1], t_us[k],
                                         con, coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
    return n


#: (name, inline): helpers are inlined at numba-IR level; called as real functions, the array arguments would be
#: reference-counted on every call (atomic operations), costing ~100 ns per pixel and step.
_JIT_NAMES = (("_texture_at", True), ("_scene_at", True), ("_advance_pixel", True), ("_chunk_kernel", False),
              ("_video_kernel", False),
              ("_render_kernel", False), ("_trace_kernel", False))
_jitted = False
_jit_lock = threading.Lock()


def _jit() -> None:
    """Compile the kernels (numba, cached on disk) the first time the simulator runs."""
    global _jitted
    with _jit_lock:
        if _jitted:
            return
        numba = require("numba", "the night event simulator (livenight.simulate)")
        g = globals()
        for name, inline in _JIT_NAMES:
            g[name] = numba.njit(cache=True, nogil=True, inline="always" if inline else "never")(g[name])
        _jitted = True
