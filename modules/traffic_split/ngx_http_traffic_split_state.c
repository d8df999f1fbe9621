
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The state file: the weights and rollouts the API and the rollout
 * change, written in a thread and read back at start and reload.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_http_traffic_split.h"
#include "ngx_meshgate_http.h"


#define NGX_HTTP_TRAFFIC_SPLIT_STATE_MAX  (1024 * 1024)


/* a state file's new content and how writing it went */

typedef struct {
    ngx_http_traffic_split_conf_t      *split;
    char                               *text;
    size_t                              len;
    u_char                             *tmp;
    const char                         *failed;
    ngx_err_t                           err;
} ngx_http_traffic_split_file_t;


struct ngx_http_traffic_split_job_s {
    ngx_http_traffic_split_file_t      *files;
    ngx_uint_t                          nfiles;
};


/* an API request that waits for the state file before it answers */

struct ngx_http_traffic_split_waiter_s {
    ngx_http_traffic_split_waiter_t    *next;
    ngx_http_request_t                 *r;
    ngx_http_traffic_split_conf_t      *scf;
    ngx_int_t                           rc;
};


static ngx_uint_t ngx_http_traffic_split_lock(
    ngx_http_traffic_split_shctx_t *sh);
static ngx_int_t ngx_http_traffic_split_write_now(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
#if (NGX_THREADS)
static ngx_int_t ngx_http_traffic_split_post(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
static void ngx_http_traffic_split_write_thread(void *data, ngx_log_t *log);
static void ngx_http_traffic_split_written(ngx_event_t *ev);
static ngx_int_t ngx_http_traffic_split_wait(
    ngx_http_traffic_split_waiter_t **list, ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf);
static void ngx_http_traffic_split_answer_all(
    ngx_http_traffic_split_waiter_t *wt, ngx_http_traffic_split_job_t *job);
#endif
static ngx_http_traffic_split_job_t *ngx_http_traffic_split_job(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
static ngx_uint_t ngx_http_traffic_split_same_file(
    ngx_http_traffic_split_conf_t *a, ngx_http_traffic_split_conf_t *b);
static void ngx_http_traffic_split_free_job(
    ngx_http_traffic_split_job_t *job);
static void ngx_http_traffic_split_write_job(
    ngx_http_traffic_split_job_t *job, ngx_log_t *log);
static ngx_int_t ngx_http_traffic_split_job_done(
    ngx_http_traffic_split_job_t *job, ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log);
static ngx_int_t ngx_http_traffic_split_job_result(
    ngx_http_traffic_split_job_t *job, ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_state_text(
    ngx_http_traffic_split_conf_t *scf, size_t *len);
static json_t *ngx_http_traffic_split_read_state(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);



/*
 * The state file is written when the API changes a split and when the
 * rollout moves (a step, done, rolled back): a small file, written once
 * per change, to a temporary name, fsync()ed and renamed, so that a
 * reader sees the old file or the new one.  The content is made on the
 * event loop; the file calls run in a thread of nginx's default thread
 * pool, and the API answers when they are done.  Without thread support
 * in nginx they run on the event loop, as nginx's own file writes do.
 *
 * One worker writes the files of a zone at a time (sh->writer, a pid);
 * a change made while another worker writes asks that writer to write
 * once more (sh->dirty), so that the files end with the last state and
 * nobody waits for another worker.
 */

ngx_int_t
ngx_http_traffic_split_save_state(ngx_http_traffic_split_conf_t *scf,
    ngx_http_request_t *r, ngx_log_t *log)
{
    ngx_int_t                        rc;
    ngx_http_traffic_split_shctx_t  *sh;

    if (scf->state.len == 0) {
        return NGX_OK;
    }

    sh = scf->sh;

    sh->dirty = 1;
    ngx_memory_barrier();

#if (NGX_THREADS)

    if (scf->writer->job) {

        /* this worker writes already: once more after that */

        if (r) {
            return ngx_http_traffic_split_wait(&scf->writer->next, r, scf);
        }

        return NGX_OK;
    }

#endif

    for ( ;; ) {
        if (!ngx_http_traffic_split_lock(sh)) {
            return NGX_BUSY;
        }

#if (NGX_THREADS)

        if (ngx_http_traffic_split_mcf()->thread_pool) {
            rc = ngx_http_traffic_split_post(scf, log);

            if (rc == NGX_AGAIN && r) {
                return ngx_http_traffic_split_wait(&scf->writer->running, r,
                                                   scf);
            }

            return rc;
        }

#endif

        rc = NGX_OK;

        while (sh->dirty) {
            sh->dirty = 0;
            ngx_memory_barrier();
            rc = ngx_http_traffic_split_write_now(scf, log);
        }

        (void) ngx_atomic_cmp_set(&sh->writer, ngx_pid, 0);
        ngx_memory_barrier();

        if (!sh->dirty) {
            return rc;
        }
    }
}


/*
 * An exiting worker's last write ran in the thread pool, which has ended
 * before this module's exit (it comes first), but its completion never
 * will: the job is freed and the lock let go here, as a new process may
 * get this pid.
 */

void
ngx_http_traffic_split_writer_exit(ngx_http_traffic_split_conf_t *scf)
{
    if (scf->writer == NULL || scf->sh == NULL) {
        return;
    }

    if (scf->writer->job) {
        ngx_http_traffic_split_free_job(scf->writer->job);
        scf->writer->job = NULL;
    }

    (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);
}


/* the zone's writer lock; a writer that died leaves it to us */

static ngx_uint_t
ngx_http_traffic_split_lock(ngx_http_traffic_split_shctx_t *sh)
{
    ngx_pid_t  pid;

    if (ngx_atomic_cmp_set(&sh->writer, 0, ngx_pid)) {
        return 1;
    }

    pid = (ngx_pid_t) sh->writer;

    if (pid == 0 || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH) {
        return 0;
    }

    return ngx_atomic_cmp_set(&sh->writer, pid, ngx_pid);
}


/* every state file of the zone, on the event loop; scf's result */

static ngx_int_t
ngx_http_traffic_split_write_now(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_int_t                      rc;
    ngx_http_traffic_split_job_t  *job;

    job = ngx_http_traffic_split_job(scf, log);

    if (job == NULL) {
        return NGX_ERROR;
    }

    ngx_http_traffic_split_write_job(job, log);

    rc = ngx_http_traffic_split_job_done(job, scf, log);

    ngx_http_traffic_split_free_job(job);

    return rc;
}


#if (NGX_THREADS)

/*
 * The caller holds the zone's writer lock: the files go to a thread.
 * NGX_AGAIN while it writes, or the result when it could not be posted
 * and was written here; the lock is released unless NGX_AGAIN.
 */

static ngx_int_t
ngx_http_traffic_split_post(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_int_t                           rc;
    ngx_thread_task_t                  *task;
    ngx_http_traffic_split_writer_t    *wr;
    ngx_http_traffic_split_job_t       *job;
    ngx_http_traffic_split_main_conf_t *mcf;

    mcf = ngx_http_traffic_split_mcf();
    wr = scf->writer;

    if (wr->task == NULL) {
        wr->task = ngx_thread_task_alloc(ngx_cycle->pool, 0);
        if (wr->task == NULL) {
            goto sync;
        }
    }

    scf->sh->dirty = 0;
    ngx_memory_barrier();

    job = ngx_http_traffic_split_job(scf, log);

    if (job == NULL) {
        (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);
        return NGX_ERROR;
    }

    task = wr->task;
    task->ctx = job;
    task->handler = ngx_http_traffic_split_write_thread;
    task->event.handler = ngx_http_traffic_split_written;
    task->event.data = scf;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(mcf->thread_pool, task) != NGX_OK) {
        ngx_http_traffic_split_free_job(job);
        goto sync;
    }

    wr->job = job;

    return NGX_AGAIN;

sync:

    rc = NGX_OK;

    do {
        scf->sh->dirty = 0;
        ngx_memory_barrier();
        rc = ngx_http_traffic_split_write_now(scf, log);
    } while (scf->sh->dirty);

    (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);

    return rc;
}


static void
ngx_http_traffic_split_write_thread(void *data, ngx_log_t *log)
{
    ngx_http_traffic_split_write_job(data, log);
}


/*
 * Back on the event loop: the results are logged, the requests that
 * waited for this write are answered, and a change made meanwhile is
 * written again (by this worker, still holding the lock) with the
 * requests that wait for it.
 */

static void
ngx_http_traffic_split_written(ngx_event_t *ev)
{
    ngx_http_traffic_split_conf_t *scf = ev->data;

    ngx_int_t                          rc;
    ngx_http_traffic_split_job_t      *job;
    ngx_http_traffic_split_waiter_t   *done, *wt;
    ngx_http_traffic_split_writer_t   *wr;
    ngx_http_traffic_split_shctx_t    *sh;

    wr = scf->writer;
    sh = scf->sh;
    job = wr->job;

    (void) ngx_http_traffic_split_job_done(job, scf, ev->log);

    done = wr->running;
    wr->running = NULL;
    wr->job = NULL;

    for ( ;; ) {
        ngx_memory_barrier();

        if (sh->dirty) {
            rc = ngx_http_traffic_split_post(scf, ev->log);

            if (rc == NGX_AGAIN) {
                wr->running = wr->next;
                wr->next = NULL;
                break;
            }

            /* written here, or failed: those waiting get this result */

            for (wt = wr->next; wt; wt = wt->next) {
                wt->rc = rc;
            }

            ngx_http_traffic_split_answer_all(wr->next, NULL);
            wr->next = NULL;
            break;
        }

        (void) ngx_atomic_cmp_set(&sh->writer, ngx_pid, 0);
        ngx_memory_barrier();

        if (!sh->dirty || !ngx_http_traffic_split_lock(sh)) {
            break;
        }
    }

    ngx_http_traffic_split_answer_all(done, job);

    ngx_http_traffic_split_free_job(job);
}


static ngx_int_t
ngx_http_traffic_split_wait(ngx_http_traffic_split_waiter_t **list,
    ngx_http_request_t *r, ngx_http_traffic_split_conf_t *scf)
{
    ngx_http_traffic_split_waiter_t  *wt;

    wt = ngx_palloc(r->pool, sizeof(ngx_http_traffic_split_waiter_t));
    if (wt == NULL) {
        return NGX_ERROR;
    }

    wt->r = r;
    wt->scf = scf;
    wt->rc = NGX_ERROR;
    wt->next = *list;
    *list = wt;

    return NGX_AGAIN;
}


/* with a job: each request gets the result of its split's file */

static void
ngx_http_traffic_split_answer_all(ngx_http_traffic_split_waiter_t *wt,
    ngx_http_traffic_split_job_t *job)
{
    ngx_int_t             rc;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_traffic_split_waiter_t  *next;

    for ( /* void */ ; wt; wt = next) {
        next = wt->next;
        r = wt->r;
        c = r->connection;

        rc = job ? ngx_http_traffic_split_job_result(job, wt->scf) : wt->rc;

        ngx_http_finalize_request(r,
                                  ngx_http_traffic_split_answer(r, wt->scf,
                                                                rc));
        ngx_http_run_posted_requests(c);
    }
}

#endif


/* the content of every state file of scf's zone, made on the event loop */

static ngx_http_traffic_split_job_t *
ngx_http_traffic_split_job(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_uint_t                           i, j;
    ngx_http_traffic_split_job_t        *job;
    ngx_http_traffic_split_file_t       *f;
    ngx_http_traffic_split_conf_t      **scfp, *s;
    ngx_http_traffic_split_main_conf_t  *mcf;

    mcf = ngx_http_traffic_split_mcf();
    scfp = mcf->splits.elts;

    job = ngx_alloc(sizeof(ngx_http_traffic_split_job_t)
                    + mcf->splits.nelts
                      * sizeof(ngx_http_traffic_split_file_t), log);
    if (job == NULL) {
        return NULL;
    }

    job->files = (ngx_http_traffic_split_file_t *) &job[1];
    job->nfiles = 0;

    for (i = 0; i < mcf->splits.nelts; i++) {
        s = scfp[i];

        if (s->shm_zone != scf->shm_zone || s->state.len == 0) {
            continue;
        }

        /* each file once: the first split that names it */

        for (j = 0; j < job->nfiles; j++) {
            if (ngx_http_traffic_split_same_file(job->files[j].split, s)) {
                break;
            }
        }

        if (j < job->nfiles) {
            continue;
        }

        f = &job->files[job->nfiles++];
        ngx_memzero(f, sizeof(ngx_http_traffic_split_file_t));
        f->split = s;

        f->text = ngx_http_traffic_split_state_text(s, &f->len);
        f->tmp = ngx_alloc(s->state.len + sizeof(".tmp.") + NGX_INT64_LEN,
                           log);

        if (f->text == NULL || f->tmp == NULL) {
            ngx_http_traffic_split_free_job(job);
            return NULL;
        }

        ngx_sprintf(f->tmp, "%V.tmp.%P%Z", &s->state, ngx_pid);
    }

    return job;
}


static ngx_uint_t
ngx_http_traffic_split_same_file(ngx_http_traffic_split_conf_t *a,
    ngx_http_traffic_split_conf_t *b)
{
    return a->state.len == b->state.len
           && ngx_strncmp(a->state.data, b->state.data, a->state.len) == 0;
}


static void
ngx_http_traffic_split_free_job(ngx_http_traffic_split_job_t *job)
{
    ngx_uint_t  i;

    for (i = 0; i < job->nfiles; i++) {
        if (job->files[i].text) {
            free(job->files[i].text);
        }

        if (job->files[i].tmp) {
            ngx_free(job->files[i].tmp);
        }
    }

    ngx_free(job);
}


/*
 * The file calls only (a thread may run them): a new file, never one
 * that is there, since a link left at its name must not make the workers
 * write through it; what failed is kept for the event loop to log.
 */

static void
ngx_http_traffic_split_write_job(ngx_http_traffic_split_job_t *job,
    ngx_log_t *log)
{
    ngx_fd_t                        fd;
    ngx_uint_t                      i;
    ngx_http_traffic_split_file_t  *f;

    for (i = 0; i < job->nfiles; i++) {
        f = &job->files[i];
        f->failed = NULL;

        if (ngx_delete_file(f->tmp) == NGX_FILE_ERROR
            && ngx_errno != NGX_ENOENT)
        {
            f->failed = ngx_delete_file_n;
            f->err = ngx_errno;
            continue;
        }

        fd = ngx_open_file(f->tmp, NGX_FILE_WRONLY,
                           NGX_FILE_CREATE_OR_OPEN|O_EXCL,
                           NGX_FILE_DEFAULT_ACCESS);

        if (fd == NGX_INVALID_FILE) {
            f->failed = ngx_open_file_n;
            f->err = ngx_errno;
            continue;
        }

        if (ngx_write_fd(fd, f->text, f->len) != (ssize_t) f->len
            || ngx_write_fd(fd, "\n", 1) != 1
            || fsync(fd) == -1)
        {
            f->failed = "writing";
            f->err = ngx_errno;
            (void) ngx_close_file(fd);
            (void) ngx_delete_file(f->tmp);
            continue;
        }

        (void) ngx_close_file(fd);

        if (ngx_rename_file(f->tmp, f->split->state.data) == NGX_FILE_ERROR) {
            f->failed = ngx_rename_file_n;
            f->err = ngx_errno;
            (void) ngx_delete_file(f->tmp);
        }
    }
}


/* logs each file's result; the result of scf's file */

static ngx_int_t
ngx_http_traffic_split_job_done(ngx_http_traffic_split_job_t *job,
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log)
{
    ngx_uint_t                      i;
    ngx_http_traffic_split_file_t  *f;

    for (i = 0; i < job->nfiles; i++) {
        f = &job->files[i];

        if (f->failed) {
            ngx_log_error(NGX_LOG_ERR, log, f->err,
                          "%s \"%s\" failed (traffic split state \"%V\")",
                          f->failed, f->tmp, &f->split->state);
            continue;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "traffic split state \"%V\" written",
                       &f->split->state);
    }

    return ngx_http_traffic_split_job_result(job, scf);
}


static ngx_int_t
ngx_http_traffic_split_job_result(ngx_http_traffic_split_job_t *job,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_uint_t  i;

    for (i = 0; i < job->nfiles; i++) {
        if (ngx_http_traffic_split_same_file(job->files[i].split, scf)) {
            return job->files[i].failed ? NGX_ERROR : NGX_OK;
        }
    }

    return NGX_ERROR;
}


/* the state file's text: the splits that share it; free() it */

static char *
ngx_http_traffic_split_state_text(ngx_http_traffic_split_conf_t *scf,
    size_t *len)
{
    char                                *text;
    json_t                              *doc, *splits, *one, *weights;
    ngx_uint_t                           i, j;
    ngx_http_traffic_split_conf_t      **scfp, *s;
    ngx_http_traffic_split_variant_t    *v;
    ngx_http_traffic_split_main_conf_t  *mcf;
    ngx_uint_t                           w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];
    u_char                               crc[8];

    mcf = ngx_http_traffic_split_mcf();

    doc = ngx_http_traffic_split_doc(&splits);
    if (doc == NULL) {
        return NULL;
    }

    json_object_set_new(doc, "version", json_integer(1));

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        s = scfp[i];

        if (!ngx_http_traffic_split_same_file(s, scf)) {
            continue;
        }

        ngx_http_traffic_split_read_weights(s, w);
        v = s->variants.elts;

        weights = json_object();

        for (j = 0; j < s->variants.nelts; j++) {
            json_object_setn_new(weights, (char *) v[j].name.data,
                                 v[j].name.len,
                                 ngx_http_traffic_split_json_weight(w[j]));
        }

        ngx_sprintf(crc, "%08xD", s->crc);

        one = json_pack("{s:s%,s:o,s:s}", "conf", crc, (size_t) 8,
                        "weights", weights, "rollout",
                        ngx_http_traffic_split_status_name(s->node->status));

        json_object_setn_new(splits, (char *) s->name.data, s->name.len,
                             one);
    }

    text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(doc);

    if (text) {
        *len = ngx_strlen(text);
    }

    return text;
}


/*
 * At start and when an edited split gets new shared state (in the master,
 * before the workers): the weights saved for this very configuration of
 * the split, or the configured ones with a warning.
 */

ngx_int_t
ngx_http_traffic_split_load_state(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    json_t                         *doc, *one, *conf, *weights, *status;
    ngx_int_t                       rc, st;
    ngx_uint_t                      i, sum, given;
    const char                     *err;
    ngx_http_traffic_split_node_t  *node;
    u_char                          crc[9];
    ngx_uint_t                      w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    doc = ngx_http_traffic_split_read_state(scf, log);

    if (doc == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;
    err = NULL;
    node = scf->node;

    one = json_object_getn(json_object_get(doc, "splits"),
                           (char *) scf->name.data, scf->name.len);

    if (one == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": not in the state file \"%V\", "
                      "configured weights", &scf->name, &scf->state);
        goto done;
    }

    conf = json_object_get(one, "conf");
    weights = json_object_get(one, "weights");
    status = json_object_get(one, "rollout");

    ngx_sprintf(crc, "%08xD%Z", scf->crc);

    if (!json_is_string(conf) || ngx_strcmp(json_string_value(conf), crc)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": the state file \"%V\" holds "
                      "weights for another configuration of it, configured "
                      "weights", &scf->name, &scf->state);
        goto done;
    }

    ngx_memzero(w, sizeof(w));

    if (!json_is_object(weights)) {
        err = "no weights";

    } else {
        err = ngx_http_traffic_split_parse_weights(scf, weights, w, &given);

        sum = 0;
        for (i = 0; i < scf->variants.nelts; i++) {
            sum += w[i];
        }

        if (err == NULL
            && (given != (1u << scf->variants.nelts) - 1
                || sum != NGX_HTTP_TRAFFIC_SPLIT_SCALE))
        {
            err = "weights of some variants missing or not summing to 100";
        }
    }

    st = json_is_string(status)
         ? ngx_http_traffic_split_status_value(
               (u_char *) json_string_value(status),
               json_string_length(status))
         : NGX_ERROR;

    if (err == NULL && st == NGX_ERROR) {
        err = "bad rollout status";
    }

    if (err) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": bad state in \"%V\" (%s), "
                      "configured weights", &scf->name, &scf->state, err);
        goto done;
    }

    ngx_memcpy(node->weights, w, sizeof(ngx_uint_t) * scf->variants.nelts);
    node->status = scf->rollout ? (ngx_uint_t) st
                                : NGX_HTTP_TRAFFIC_SPLIT_NONE;
    rc = NGX_OK;

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "traffic split \"%V\": weights from \"%V\"",
                  &scf->name, &scf->state);

done:

    json_decref(doc);

    return rc;
}


static json_t *
ngx_http_traffic_split_read_state(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    u_char           *buf;
    json_t           *doc;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    json_error_t      jerr;
    ngx_file_info_t   fi;

    /*
     * the workers' user may write in the file's directory: a FIFO there
     * must not block the master, nor a device feed it
     */

    fd = ngx_open_file(scf->state.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;
        ngx_log_error(NGX_LOG_WARN, log, err == NGX_ENOENT ? 0 : err,
                      "traffic split \"%V\": %s state file \"%V\", "
                      "configured weights", &scf->name,
                      err == NGX_ENOENT ? "no" : "cannot open the",
                      &scf->state);
        return NULL;
    }

    buf = NULL;
    doc = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "traffic split \"%V\": state file \"%V\" unreadable, "
                      "configured weights", &scf->name, &scf->state);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is not a "
                      "regular file, configured weights", &scf->name,
                      &scf->state);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_HTTP_TRAFFIC_SPLIT_STATE_MAX) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is over 1m, "
                      "configured weights", &scf->name,
                      &scf->state);
        goto done;
    }

    buf = ngx_alloc(ngx_file_size(&fi) + 1, log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));

    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "traffic split \"%V\": reading the state file \"%V\" "
                      "failed, configured weights", &scf->name, &scf->state);
        goto done;
    }

    /* our own line: jansson's error text would quote the file's bytes */

    doc = json_loadb((char *) buf, n, JSON_REJECT_DUPLICATES, &jerr);

    if (doc == NULL || !json_is_object(doc)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is no JSON "
                      "object (at offset %d), configured weights",
                      &scf->name, &scf->state, doc ? 0 : jerr.position);
        json_decref(doc);
        doc = NULL;
    }

done:

    if (buf) {
        ngx_free(buf);
    }

    (void) ngx_close_file(fd);

    return doc;
}
